"""Task: a Step that formats rows into chats, asks an LLM, and parses answers into columns.

The row-building rules (``SPEC-tasks.md``) live in ``process`` and its helpers: one output row
per generation or one grouped row per input, ``distilabel_metadata`` keyed by the task's name,
``model_name`` from the LLM, and a generation that fails to parse keeps its raw text, because
that text was paid for.
"""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from pydantic import Field

from taskloom.component import RuntimeParameter
from taskloom.errors import GenerationError, TaskloomError
from taskloom.llms.async_llm import failed_output
from taskloom.llms.base import LLM
from taskloom.steps import Step, columns_as_dict
from taskloom.typing import ChatType, GenerateOutput, Row

logger = logging.getLogger("taskloom.tasks")

METADATA = "distilabel_metadata"
"""The metadata column; named as in distilabel so datasets made here read the same."""


@dataclass(frozen=True)
class Call:
    """One request a task makes for a row: a chat and how many answers to it.

    ``first_index`` is the generation index of the first answer. The pipeline's cache keys each
    answer by it, so a task that asks the same chat once per generation (one chain of calls per
    generation) gives each chain its own index, and a resumed run finds every chain's answers.
    """

    chat: ChatType
    count: int = 1
    first_index: int = 0
    kwargs: Mapping[str, Any] | None = None
    """Generation kwargs for this call on top of the task's (a schema that depends on the row)."""


CallPlan: TypeAlias = Generator[list[Call], list[GenerateOutput], GenerateOutput]
"""What :meth:`Task.plan` returns: it yields batches of calls that may run at the same time,
is sent their outputs (in the same order), and returns the row's output, one text per
generation."""


def run_plans(plans: list[CallPlan], ask: Callable[[list[Call]], list[GenerateOutput]]) -> list[GenerateOutput]:
    """Drive plans to their ends in lockstep with a synchronous ``ask``; one output per plan.

    Each step gathers the next calls of every unfinished plan into one ``ask``, so a sync LLM
    still answers a whole batch of rows at once. The executor drives one plan per row instead,
    each call as soon as it can go.
    """
    results: dict[int, GenerateOutput] = {}
    pending: dict[int, list[Call]] = {}

    def advance(index: int, outputs: list[GenerateOutput] | None) -> None:
        plan = plans[index]
        try:
            pending[index] = next(plan) if outputs is None else plan.send(outputs)
        except StopIteration as done:
            results[index] = done.value

    for index in range(len(plans)):
        advance(index, None)
    while pending:
        waiting = list(pending.items())
        pending.clear()
        answers = iter(ask([call for _, calls in waiting for call in calls]))
        for index, calls in waiting:
            advance(index, [next(answers) for _ in calls])
    return [results[index] for index in range(len(plans))]


def row_errors(row: Row, task_name: str) -> set[str]:
    """Why task ``task_name`` got no text for this row (empty if it did).

    Grouped generations keep one metadata dict per generation, so the column may be a list.
    """
    metadata = row.get(METADATA)
    each = metadata if isinstance(metadata, list) else [metadata]
    key = f"error_{task_name}"
    return {str(m[key]) for m in each if isinstance(m, dict) and m.get(key)}


def _upstream_metadata(upstream: Any) -> dict[str, Any]:
    """An earlier task's metadata to carry on: a grouped row's list of per-generation dicts
    becomes one dict of lists (``raw_output_answer: [first, second]``), so nothing is dropped."""
    if isinstance(upstream, dict):
        return upstream
    if isinstance(upstream, list):
        each = [m if isinstance(m, dict) else {} for m in upstream]
        keys = dict.fromkeys(key for m in each for key in m)
        return {key: [m.get(key) for m in each] for key in keys}
    return {}


def _default_llm() -> LLM:
    from taskloom.config import default_llm

    return default_llm()


class Task(Step):
    """Format each row into a chat, generate with ``llm``, parse each answer into columns.

    Subclasses define ``inputs``, ``outputs``, ``format_input`` and ``format_output``.
    """

    llm: LLM = Field(
        default_factory=_default_llm,
        description="The LLM that generates this task's outputs; when omitted, the default LLM "
        "($TASKLOOM_DEFAULT_LLM, the config file, else the local model of taskloom-llamacpp).",
    )
    num_generations: RuntimeParameter[int] = Field(default=1, ge=1, description="Number of generations per input row.")
    group_generations: bool = Field(
        default=False,
        description="One row per input with list columns, instead of one row per generation.",
    )
    add_raw_output: RuntimeParameter[bool] = Field(
        default=True,
        description="Keep the LLM's raw text under distilabel_metadata['raw_output_<name>'].",
    )
    example: ClassVar[tuple[Row, Row] | None] = None
    """One input row and the output columns it gives (without ``model_name`` and metadata).

    Shown by ``taskloom tasks NAME`` and on docs pages; a task pack's tests check it holds.
    """
    add_raw_input: RuntimeParameter[bool] = Field(
        default=True,
        description="Keep the formatted chat input under distilabel_metadata['raw_input_<name>'].",
    )

    @abstractmethod
    def format_input(self, input: Row) -> ChatType:
        """Turn one row into OpenAI-style chat messages."""

    @abstractmethod
    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        """Parse one generation (for the row it came from) into the ``outputs`` columns."""

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        """The requests behind one row's ``num_generations`` texts: by default, one call.

        A task whose answer takes several calls overrides this generator: it yields lists of
        :class:`Call` (the calls in one list may run concurrently), receives their outputs, and
        returns one output whose texts go to ``format_output``. Comparing two responses in both
        orders, or evolving an instruction over rounds that each build on the last, are plans.
        Every call goes through the same cache, retries and concurrency limit as a plain task's.
        """
        [output] = yield [Call(chat, self.num_generations)]
        return output

    @property
    def makes_several_calls(self) -> bool:
        """Whether this task overrides :meth:`plan` (the executor keeps a fast path for one call)."""
        return type(self).plan is not Task.plan

    def load(self) -> None:
        self.llm.load()

    def unload(self) -> None:
        self.llm.unload()

    def llm_kwargs(self) -> dict[str, Any]:
        """Generation kwargs for this task's calls: the LLM's own, plus any the task itself needs.

        A task that needs a kwarg (a schema for structured output) adds it here rather than
        writing it into its LLM, which another task may share.
        """
        return dict(self.llm.generation_kwargs)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        extra = [self.output_mappings.get(c, c) for c in ("model_name", METADATA)]
        return list(dict.fromkeys([*super().columns_after(available), *extra]))

    def output_columns(self) -> list[str]:
        """Declared outputs without ``model_name``, which the task adds itself."""
        return [c for c in columns_as_dict(self.outputs) if c != "model_name"]

    def set_runtime_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Set task runtime parameters; the ``llm`` key holds the LLM's own."""
        params = dict(parameters)
        if "llm" in params:
            self.llm.set_runtime_parameters(params.pop("llm"))
        super().set_runtime_parameters(params)

    def runtime_parameters_info(self) -> list[dict[str, Any]]:
        return [
            *super().runtime_parameters_info(),
            {"name": "llm", "runtime_parameters_info": self.llm.runtime_parameters_info()},
        ]

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["llm"] = self.llm.dump()
        return data

    # -- processing --------------------------------------------------------------------------

    def format_inputs(self, rows: list[Row]) -> list[ChatType]:
        """Format every (already mapped and checked) row into a chat."""
        formatted = []
        for index, row in enumerate(rows):
            try:
                formatted.append(self.format_input(row))
            except Exception as error:
                error.add_note(f"(while task {self.name!r} formatted row {index})")
                raise
        return formatted

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        self.check_columns(inputs)
        rows = self.map_inputs(list(inputs))
        formatted = self.format_inputs(rows)
        kwargs = self.llm_kwargs()
        if self.makes_several_calls:
            plans = [self.plan(row, chat) for row, chat in zip(rows, formatted, strict=True)]
            outputs = run_plans(plans, lambda calls: self._generate_calls(calls, kwargs))
        else:  # the default plan, without a generator per row
            outputs = self._generate_calls([Call(chat, self.num_generations) for chat in formatted], kwargs)
        yield self.map_outputs(self.build_rows(rows, formatted, outputs))

    def _generate_calls(self, calls: list[Call], kwargs: dict[str, Any]) -> list[GenerateOutput]:
        """Calls through the LLM's batch ``generate``: one batch per distinct answer count and kwargs."""
        groups: dict[tuple[int, str], list[int]] = {}
        for index, call in enumerate(calls):
            extra = json.dumps(call.kwargs, sort_keys=True, default=repr) if call.kwargs else ""
            groups.setdefault((call.count, extra), []).append(index)
        outputs: dict[int, GenerateOutput] = {}
        for (count, _), positions in groups.items():
            extra_kwargs = calls[positions[0]].kwargs or {}
            try:
                answers = self.llm.generate(
                    [calls[i].chat for i in positions], num_generations=count, **{**kwargs, **extra_kwargs}
                )
            except GenerationError as error:
                # A sync LLM that gives up on a batch: every row records why, none is dropped.
                logger.warning("Task %r: the LLM failed for a batch of %d inputs: %s", self.name, len(positions), error)
                answers = [failed_output(count, error) for _ in positions]
            if len(answers) != len(positions):
                raise TaskloomError(
                    f"LLM {self.llm.model_name!r} returned {len(answers)} outputs for {len(positions)} "
                    f"inputs in task {self.name!r}; an LLM must return one output per input."
                )
            outputs.update(zip(positions, answers, strict=True))
        return [outputs[i] for i in range(len(calls))]

    def build_rows(self, rows: list[Row], formatted: list[ChatType], outputs: list[GenerateOutput]) -> list[Row]:
        """Combine inputs and LLM outputs into output rows, as the task spec says."""
        model_name = self.llm.model_name
        result: list[Row] = []
        for row, chat, output in zip(rows, formatted, outputs, strict=True):
            per_generation = self._format_generations(row, chat, output)
            if self.group_generations:
                result.append(self._group(row, per_generation, model_name))
            else:
                for columns in per_generation:
                    result.append({**row, **columns, "model_name": model_name})
        return result

    def _format_generations(self, row: Row, chat: ChatType, output: GenerateOutput) -> list[Row]:
        """One dict of output columns (with its metadata) per generation of ``row``."""
        name = self.name
        raw_output_key = "raw_output_" + name
        statistics = output.get("statistics") or {}
        input_tokens = statistics.get("input_tokens") or []
        output_tokens = statistics.get("output_tokens") or []
        error = output.get("error")
        upstream_meta = _upstream_metadata(row.get(METADATA))

        formatted = []
        for index, text in enumerate(output["generations"]):
            meta = upstream_meta.copy()
            columns = self._parse(text, row, meta, raw_output_key)
            if self.add_raw_input:
                meta["raw_input_" + name] = chat
            if index < len(input_tokens) and index < len(output_tokens):
                meta["statistics_" + name] = {
                    "input_tokens": input_tokens[index],
                    "output_tokens": output_tokens[index],
                }
            if error:
                meta["error_" + name] = error
            columns[METADATA] = meta
            formatted.append(columns)
        return formatted

    def _parse(self, text: str | None, row: Row, meta: dict[str, Any], raw_key: str) -> dict[str, Any]:
        if text is None:
            if self.add_raw_output:
                meta[raw_key] = None
            return dict.fromkeys(self.output_columns())
        try:
            columns = self.format_output(text, row)
        except Exception as error:
            logger.warning(
                "Task %r could not parse a generation (%s: %s); its output columns are None and "
                "the raw text is kept in %s[%r].",
                self.name,
                type(error).__name__,
                error,
                METADATA,
                raw_key,
            )
            meta[raw_key] = text  # the only copy of what was paid for, whatever add_raw_output says
            return dict.fromkeys(self.output_columns())
        if self.add_raw_output:
            meta[raw_key] = text
        return dict(columns)

    def _group(self, row: Row, per_generation: list[Row], model_name: str) -> Row:
        keys: dict[str, None] = dict.fromkeys(self.output_columns())
        for columns in per_generation:
            keys.update(dict.fromkeys(columns))
        grouped = {key: [columns.get(key) for columns in per_generation] for key in keys}
        return {**row, **grouped, "model_name": model_name}
