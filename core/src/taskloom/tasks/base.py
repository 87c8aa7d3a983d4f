"""Task: a Step that formats rows into chats, asks an LLM, and parses answers into columns.

The row-building rules (``docs/task-semantics.md``) live in ``work`` and its helpers: one output row
per generation or one grouped row per input, ``distilabel_metadata`` keyed by the task's name,
``model_name`` from the LLM, and a generation that fails to parse keeps its raw text, because
that text was paid for.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from taskloom.component import RuntimeParameter
from taskloom.errors import GenerationError, RowInputError, TaskloomError
from taskloom.images import has_images
from taskloom.llms.async_llm import failed_output
from taskloom.llms.base import LLM
from taskloom.llms.inputs import images_refused
from taskloom.llms.outputs import token_counts
from taskloom.steps import Step, columns_as_dict
from taskloom.typing import ChatType, GenerateOutput, Row
from taskloom.work import Call, CallPlan, RowWork, lockstep, run_work

if TYPE_CHECKING:
    from taskloom.judging import JudgeStatistics

__all__ = ["METADATA", "Call", "CallPlan", "Task", "row_errors"]

logger = logging.getLogger("taskloom.tasks")

METADATA = "distilabel_metadata"
"""The metadata column; named as in distilabel so datasets made here read the same."""


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


class Task(Step):
    """Format each row into a chat, generate with ``llm``, parse each answer into columns.

    Subclasses define ``inputs``, ``outputs``, ``format_input`` and ``format_output``.
    """

    drives_itself: ClassVar[bool] = True

    llm: LLM | None = Field(
        default=None,
        description="The LLM that generates this task's outputs; when omitted, the default LLM "
        "($TASKLOOM_DEFAULT_LLM, the config file, else the local model of taskloom-llamacpp), "
        "chosen by get_task, a pipeline file, the CLI, or load().",
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
    max_unreadable: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="For a judge: stop the run once more than this share of its replies cannot be read "
        "(after 20 judged items), showing three of them.",
    )

    needs_raw_text: ClassVar[bool] = False
    """Whether ``format_input`` returns raw text (a ``str``, completed with no chat template, as
    Magpie and URIAL do) rather than chat messages; such a task refuses an LLM whose
    :meth:`~taskloom.llms.LLM.completes_raw_text` is False when it is built."""

    @model_validator(mode="after")
    def _llm_can_serve(self) -> Task:
        if self.llm is not None:
            self.check_llm(self.llm)
        return self

    def check_llm(self, llm: LLM) -> None:
        """Refuse an LLM that lacks what this task needs, naming both, before any row is read.

        A task that needs more of its LLM (native tool calls, images) extends this.
        """
        if self.needs_raw_text and not llm.completes_raw_text():
            raise ValueError(
                f"task {self.name!r} ({self.type_name()}) needs an LLM that completes raw text, with no chat "
                f"template applied, but {llm.type_name()} ({llm.model_name}) only takes chat messages. Use one "
                "that does: llamacpp (in-process), or openai with a base_url whose server offers /v1/completions "
                "(vLLM, llama.cpp's llama-server)."
            )

    @abstractmethod
    def format_input(self, input: Row) -> ChatType:
        """Turn one row into OpenAI-style chat messages (or, for a task that ``needs_raw_text``, a prompt string)."""

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

    def described_prompt(self) -> str | None:
        """The prompt as a dataset card shows it: the task's template, else its system prompt, else None."""
        for attribute in ("template", "system_prompt"):
            value = getattr(self, attribute, None)
            if isinstance(value, str) and value.strip():
                return value
        return None

    def judge_statistics(self) -> JudgeStatistics | None:
        """A collector of this task's judge statistics for a run, or None for a task that judges nothing.

        A judging task returns a :class:`~taskloom.judging.ScoreStatistics` or
        :class:`~taskloom.judging.VerdictStatistics` naming its columns (or its own subclass of
        :class:`~taskloom.judging.JudgeStatistics`); the pipeline feeds it every row the step
        writes, and shows what it measured in the stats, the summary and the dataset card.
        """
        return None

    def resolve_llm(self) -> LLM:
        """This task's LLM; the default LLM, chosen now, if it was built without one.

        Building a task never does this (it reads the user's config and may load plugins), so a
        task can be made, checked and dumped with no I/O at all.
        """
        if self.llm is None:
            from taskloom.config import default_llm

            llm = default_llm()
            self.check_llm(llm)
            self.llm = llm
        return self.llm

    def load(self) -> None:
        self.resolve_llm().load()

    def unload(self) -> None:
        if self.llm is not None:
            self.llm.unload()

    def is_loaded(self) -> bool:
        return self.llm is not None and self.llm.is_loaded()

    def llm_kwargs(self) -> dict[str, Any]:
        """Generation options for this task's calls: the LLM's own, plus any the task itself needs.

        A task that needs an option (a schema for structured output) adds it here rather than
        writing it into its LLM, which another task may share.
        """
        return dict(self.resolve_llm().generation_kwargs)

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
            self.resolve_llm().set_runtime_parameters(params.pop("llm"))
        super().set_runtime_parameters(params)

    def runtime_parameters_info(self) -> list[dict[str, Any]]:
        llm = self.resolve_llm()
        return [
            *super().runtime_parameters_info(),
            {"name": "llm", "runtime_parameters_info": llm.runtime_parameters_info()},
        ]

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["llm"] = self.llm.dump() if self.llm is not None else None
        return data

    # -- processing --------------------------------------------------------------------------

    def format_inputs(self, rows: list[Row]) -> list[ChatType]:
        """Format every (already mapped and checked) row into a chat.

        A row whose ``format_input`` raises :class:`RowInputError` gets an empty chat here; use
        :meth:`_format_all` to learn which rows those are.
        """
        return self._format_all(rows)[0]

    def _format_all(self, rows: list[Row]) -> tuple[list[ChatType], dict[int, GenerationError]]:
        """Every row's chat, and the rows that cannot be asked (by position) with why.

        A chat with images, for an LLM that reads none, is one of those: checked here, before any
        request, so every provider and every driver refuses it the same way (a ``BadRequestError``
        naming the model) instead of each one dropping the pictures or failing in its own way.
        Any other exception is a bug in the task or its template, which would fail every row
        alike: it stops the run, naming the row.
        """
        formatted: list[ChatType] = []
        unusable: dict[int, GenerationError] = {}
        reads_images: bool | None = None  # asked of the LLM only once a row holds an image
        for index, row in enumerate(rows):
            try:
                chat = self.format_input(row)
            except RowInputError as error:
                unusable[index] = error
                formatted.append([])
                continue
            except Exception as error:
                error.add_note(f"(while task {self.name!r} formatted row {index})")
                raise
            formatted.append(chat)
            if has_images(chat):
                if reads_images is None:
                    reads_images = self.resolve_llm().reads_images()
                if not reads_images:
                    unusable[index] = images_refused(self.resolve_llm())
        return formatted, unusable

    def work(self, rows: list[Row]) -> RowWork:
        """The row recipe with its LLM calls: check, map, format, plan, ask, build rows, map back.

        Every call it yields carries the task's generation options merged with the plan's.
        """
        self.check_columns(rows)
        mapped = self.map_inputs(list(rows))
        formatted, unusable = self._format_all(mapped)
        kwargs = self.llm_kwargs()
        outputs: list[GenerateOutput]
        asked = [i for i in range(len(mapped)) if i not in unusable] if unusable else None
        if self.makes_several_calls:
            chosen = range(len(mapped)) if asked is None else asked
            plans = [self._merged(self.plan(mapped[i], formatted[i]), kwargs) for i in chosen]
            outputs = yield from lockstep(plans)
        else:  # the default plan, without a generator per row
            count = self.num_generations
            chats = formatted if asked is None else [formatted[i] for i in asked]
            outputs = yield [Call(chat, count, 0, kwargs) for chat in chats]
        if asked is not None:  # the rows that could not be asked record why, in their place
            answers = iter(outputs)
            outputs = [
                failed_output(self.num_generations, unusable[i]) if i in unusable else next(answers)
                for i in range(len(mapped))
            ]
        return self.map_outputs(self.build_rows(mapped, formatted, outputs))

    @staticmethod
    def _merged(plan: CallPlan, kwargs: dict[str, Any]) -> CallPlan:
        """``plan`` with the task's options under each call's own."""
        try:
            calls = next(plan)
            while True:
                full = [dataclasses.replace(c, kwargs={**kwargs, **c.kwargs} if c.kwargs else kwargs) for c in calls]
                calls = plan.send((yield full))
        except StopIteration as done:
            output: GenerateOutput = done.value
            return output

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        """The whole batch through :meth:`work`, the LLM asked synchronously (one ``generate`` per round)."""
        from taskloom.html_table import Rows

        yield Rows(run_work(self.work(inputs), self._generate_calls))

    def _generate_calls(self, calls: list[Call]) -> list[GenerateOutput]:
        """Calls through the LLM's batch ``generate``: one batch per distinct answer count and options."""
        llm = self.resolve_llm()
        first = calls[0] if calls else None
        if first is not None and all(
            c.count == first.count and c.kwargs is first.kwargs and c.run is None for c in calls
        ):
            # The default plan: one answer count and the task's own options for every row (hot path).
            return self._generate_group(llm, [c.chat for c in calls], first.count, first.kwargs or {})
        groups: dict[tuple[int, str], list[int]] = {}
        seen: dict[int, str] = {}  # most calls share one options dict: serialise each dict once
        outputs: dict[int, GenerateOutput] = {}
        for index, call in enumerate(calls):
            if call.run is not None:  # not a request: run in place
                outputs[index] = call.run()
                continue
            options = call.kwargs or {}
            key = seen.get(id(options))
            if key is None:
                key = seen[id(options)] = json.dumps(options, sort_keys=True, default=repr)
            groups.setdefault((call.count, key), []).append(index)
        for (count, _), positions in groups.items():
            options = calls[positions[0]].kwargs or {}
            answers = self._generate_group(llm, [calls[i].chat for i in positions], count, options)
            outputs.update(zip(positions, answers, strict=True))
        return [outputs[i] for i in range(len(calls))]

    def _generate_group(
        self, llm: LLM, chats: list[ChatType], count: int, options: Mapping[str, Any]
    ) -> list[GenerateOutput]:
        """One ``generate`` for chats that share an answer count and options."""
        try:
            answers = llm.generate(chats, num_generations=count, **options)
        except GenerationError as error:
            # A sync LLM that gives up on a batch: every row records why, none is dropped.
            logger.warning("Task %r: the LLM failed for a batch of %d inputs: %s", self.name, len(chats), error)
            answers = [failed_output(count, error) for _ in chats]
        if len(answers) != len(chats):
            raise TaskloomError(
                f"LLM {llm.model_name!r} returned {len(answers)} outputs for {len(chats)} "
                f"inputs in task {self.name!r}; an LLM must return one output per input."
            )
        return answers

    def build_rows(self, rows: list[Row], formatted: list[ChatType], outputs: list[GenerateOutput]) -> list[Row]:
        """Combine inputs and LLM outputs into output rows, as the task spec says."""
        model_name = self.resolve_llm().model_name
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
        generations = output["generations"]
        input_tokens, output_tokens = token_counts(output.get("statistics"), len(generations))
        error = output.get("error")
        errors = output.get("errors") or []
        answered_by = output.get("answered_by")
        upstream_meta = _upstream_metadata(row.get(METADATA))

        formatted = []
        for index, text in enumerate(generations):
            meta = upstream_meta.copy()
            columns = self._parse(text, row, meta, raw_output_key)
            if self.add_raw_input:
                meta["raw_input_" + name] = chat
            tokens_in, tokens_out = input_tokens[index], output_tokens[index]
            if tokens_in is not None and tokens_out is not None:
                meta["statistics_" + name] = {"input_tokens": tokens_in, "output_tokens": tokens_out}
            failure = errors[index] if index < len(errors) and errors[index] else error
            if failure:
                meta["error_" + name] = failure
            if answered_by and index < len(answered_by) and answered_by[index]:
                meta["answered_by_" + name] = answered_by[index]
            columns[METADATA] = meta
            formatted.append(columns)
        return formatted

    def _parse(self, text: str | None, row: Row, meta: dict[str, Any], raw_key: str) -> dict[str, Any]:
        """``format_output`` for one generation; on failure every output is None and the raw text is kept.

        It is called for a generation with no text too (``output`` is None), as its signature
        says, so a task can fill columns from its row.
        """
        try:
            columns = self.format_output(text, row)
        except Exception as error:
            log = logger.debug if text is None else logger.warning
            log(
                "Task %r could not parse a generation (%s: %s); its output columns are None and "
                "the raw text is kept in %s[%r].",
                self.name,
                type(error).__name__,
                error,
                METADATA,
                raw_key,
            )
            # The only copy of what was paid for, whatever add_raw_output says.
            if text is not None or self.add_raw_output:
                meta[raw_key] = text
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
