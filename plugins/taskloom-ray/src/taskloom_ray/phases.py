"""A pipeline cut into phases at the steps that need every row.

Most steps make each row on its own, so any shard of the rows can run them anywhere. A step with
``needs_all_rows`` (a deduplication, a measure over the dataset) cannot: run per shard, it would
keep a row that repeats one in another shard. So the pipeline is cut at each such step: the steps
before it run sharded, the step runs once over all their rows in source order (a phase of one
shard), and the steps after it run sharded again over its output. Each phase is a run of its own
under ``phases/`` of the run folder (its parts, manifests and shard caches), so a rerun resumes
phase by phase; the last phase writes into the run folder itself.

The cut must be clean: every step is before the step that needs all rows, after it, or it, and
nothing after it reads a step before it directly. Other shapes are refused with what to do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from taskloom.plugin import Flow, Pipeline, Row, Source, get_source
from taskloom_ray.shards import ShardError


@dataclass(frozen=True)
class Phase:
    """Steps that run together: sharded, or (``whole``) once over every row."""

    pipeline: Pipeline
    whole: bool
    root: Path | None
    """Where the phase writes: a folder under ``phases/``; None for the last phase (the run folder)."""

    @property
    def leaf(self) -> str:
        (leaf,) = self.pipeline.graph.leaves
        return leaf


class PartsSource(Source):
    """The rows a previous phase published for one leaf, read part after part (source order)."""

    folder: str

    def rows(self) -> Iterator[Row]:
        for part in sorted(Path(self.folder).glob("part-*.jsonl")):
            yield from get_source("jsonl", path=str(part)).rows()  # core's reader, with its line errors

    def describe(self) -> str:
        return f"the parts in {self.folder}"


def plan_phases(pipeline: Pipeline, root: Path) -> list[Phase]:
    """The phases of ``pipeline``: one sharded phase when no step needs all rows."""
    graph = pipeline.graph
    wholes = [name for name in graph.order if graph.steps[name].needs_all_rows]
    if not wholes:
        return [Phase(pipeline, whole=False, root=None)]
    phases: list[Phase] = []
    remaining = list(graph.order)
    for name in wholes:
        ancestors, descendants = _reachable(graph.parents, name), _reachable(graph.children, name)
        before = [n for n in remaining if n in ancestors]
        after = [n for n in remaining if n in descendants]
        stray = [n for n in remaining if n not in (*before, name, *after)]
        skips = [(p, c) for c in after for p in graph.parents[c] if p in before]
        if stray or skips or len(graph.parents[name]) > 1:
            problem = (
                f"the steps {stray} are neither before it nor after it"
                if stray
                else f"step {skips[0][1]!r} reads {skips[0][0]!r}, which comes before it"
                if skips
                else f"it joins {graph.parents[name]}"
            )
            raise ShardError(
                f"Step {name!r} needs every row at once ({type(graph.steps[name]).__name__}), so the ray executor "
                f"runs it between a phase before it and a phase after it; but {problem}. Put it on the pipeline's "
                "trunk (every path from the source passes through it), or run this pipeline with the local executor."
            )
        if before:
            phases.append(_phase(pipeline, before, whole=False, root=root, index=len(phases)))
        phases.append(_phase(pipeline, [name], whole=True, root=root, index=len(phases)))
        remaining = after
    if remaining:
        phases.append(_phase(pipeline, remaining, whole=False, root=root, index=len(phases)))
    last = phases[-1]
    phases[-1] = Phase(last.pipeline, last.whole, None)
    for phase in phases[:-1]:
        if len(phase.pipeline.graph.leaves) != 1:  # pragma: no cover - ruled out by the checks above
            raise ShardError(f"Phase {phase.pipeline.name!r} ends in several steps; run it with the local executor.")
    return phases


def _phase(pipeline: Pipeline, names: list[str], *, whole: bool, root: Path, index: int) -> Phase:
    graph = pipeline.graph
    chosen = set(names)
    flow = Flow(
        steps={name: graph.steps[name] for name in names},
        edges=[(parent, child) for child in names for parent in graph.parents[child] if parent in chosen],
    )
    label = "-".join(names) if whole else f"to-{names[-1]}"
    sub = Pipeline(flow, name=f"{pipeline.name}.phase{index}")
    sub.prices, sub.sinks = pipeline.prices, list(pipeline.sinks)
    return Phase(sub, whole=whole, root=root / "phases" / f"{index:02d}-{label}")


def _reachable(links: Mapping[str, list[str]], name: str) -> set[str]:
    """The steps reached from ``name`` by following ``links`` (the graph's parents: its ancestors;
    its children: its descendants)."""
    found: set[str] = set()
    todo = list(links[name])
    while todo:
        step = todo.pop()
        if step not in found:
            found.add(step)
            todo.extend(links[step])
    return found
