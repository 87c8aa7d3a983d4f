"""The shape of a pipeline: steps joined with ``>>`` into a DAG, checked before any row flows.

``a >> b`` chains, ``a >> [b, c]`` branches, ``[b, c] >> d`` joins. Each ``>>`` returns a
:class:`Flow` (the steps and edges so far, and the steps new ones attach to), so a whole DAG can
be written as one expression and handed to :class:`~taskloom.pipeline.Pipeline`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskloom.errors import TaskloomError
from taskloom.steps import JoinStep, Step, columns_as_dict


class PipelineError(TaskloomError, ValueError):
    """A pipeline that cannot run as written: a cycle, a duplicate name, a column nobody makes."""


@dataclass
class Flow:
    """Steps and edges built with ``>>``; ``tails`` are the steps the next ``>>`` attaches to."""

    steps: dict[str, Step] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    tails: list[Step] = field(default_factory=list)

    @classmethod
    def of(cls, item: Step | Flow | Iterable[Step | Flow]) -> Flow:
        """A flow from a step, a flow, or a list of them (parallel branches)."""
        if isinstance(item, Flow):
            return item
        flow = cls()
        if isinstance(item, Step):
            flow._add(item)
            flow.tails = [item]
            return flow
        for part in item:
            other = cls.of(part)
            flow._merge(other)
            flow.tails.extend(other.tails)
        return flow

    def _add(self, step: Step) -> None:
        existing = self.steps.get(step.name)
        if existing is not None and existing is not step:
            raise PipelineError(
                f"Two steps are named {step.name!r}; give each step its own name (name=...), "
                "since it keys runtime parameters and suffixes metadata columns."
            )
        self.steps[step.name] = step

    def _merge(self, other: Flow) -> None:
        for step in other.steps.values():
            self._add(step)
        for edge in other.edges:
            if edge not in self.edges:
                self.edges.append(edge)

    def __rshift__(self, other: Step | Flow | Sequence[Step | Flow]) -> Flow:
        target = Flow.of(other)
        heads = target.heads()
        flow = Flow()
        flow._merge(self)
        flow._merge(target)
        for tail in self.tails:
            for head in heads:
                if (tail.name, head.name) not in flow.edges:
                    flow.edges.append((tail.name, head.name))
        flow.tails = list(target.tails)
        return flow

    def __rrshift__(self, other: Step | Sequence[Step | Flow]) -> Flow:
        return Flow.of(other) >> self

    def heads(self) -> list[Step]:
        """Steps with no parent inside this flow."""
        children = {child for _, child in self.edges}
        return [step for name, step in self.steps.items() if name not in children]


@dataclass(frozen=True)
class Graph:
    """A checked DAG: steps in a topological order, each with its parents in branch order."""

    steps: dict[str, Step]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    order: list[str]

    @classmethod
    def build(cls, flow: Flow) -> Graph:
        if not flow.steps:
            raise PipelineError("A pipeline needs at least one step.")
        parents: dict[str, list[str]] = {name: [] for name in flow.steps}
        children: dict[str, list[str]] = {name: [] for name in flow.steps}
        for parent, child in flow.edges:
            parents[child].append(parent)
            children[parent].append(child)
        order: list[str] = []
        indegree = {name: len(p) for name, p in parents.items()}
        ready = [name for name in flow.steps if indegree[name] == 0]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for child in children[name]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(flow.steps):
            stuck = sorted(set(flow.steps) - set(order))
            raise PipelineError(f"The steps {stuck} form a cycle; a pipeline must be a DAG.")
        return cls(dict(flow.steps), parents, children, order)

    @property
    def roots(self) -> list[str]:
        return [name for name in self.order if not self.parents[name]]

    @property
    def leaves(self) -> list[str]:
        return [name for name in self.order if not self.children[name]]

    def columns(self, source_columns: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """For each step: the columns it receives and the columns its rows have after it.

        Raises :class:`PipelineError` for the first step whose required input no upstream step (or
        the source) provides, naming the step, the column and what is available.
        """
        after: dict[str, list[str]] = {}
        result: dict[str, tuple[list[str], list[str]]] = {}
        for name in self.order:
            step = self.steps[name]
            parents = self.parents[name]
            if not parents:
                available = list(source_columns)
            else:
                available = list(dict.fromkeys(col for parent in parents for col in after[parent]))
            for column in step.required_inputs():
                wanted = step.input_mappings.get(column, column)
                if wanted not in available:
                    where = f"the upstream steps {parents}" if parents else "the source"
                    mapped = f" (mapped from its input {column!r})" if wanted != column else ""
                    raise PipelineError(
                        f"Step {name!r} needs the column {wanted!r}{mapped}, but {where} provide(s) only: "
                        f"{', '.join(available) or '(no columns)'}. Add a step that makes it, or map another "
                        f"column with input_mappings={{{column!r}: '<column>'}}."
                    )
            if isinstance(step, JoinStep) and len(parents) > 1:
                after[name] = step.columns_after_branches([after[parent] for parent in parents])
            else:
                after[name] = step.columns_after(available)
            result[name] = (available, after[name])
        return result

    def describe(self, source_columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Each step with its parents, input/output columns and runtime parameters (``taskloom show``)."""
        columns = self.columns(source_columns) if source_columns is not None else {}
        described = []
        for name in self.order:
            step = self.steps[name]
            entry: dict[str, Any] = {
                "name": name,
                "type": step.type_name(),
                "after": self.parents[name],
                "join": isinstance(step, JoinStep),
                "inputs": columns_as_dict(step.inputs),
                "outputs": columns_as_dict(step.outputs),
                "runtime_parameters": step.runtime_parameters_info(),
            }
            if name in columns:
                entry["receives"], entry["produces"] = columns[name]
            described.append(entry)
        return described
