"""Pipeline: a source, a DAG of steps and some sinks, checked up front and run on one event loop.

    from taskloom import Pipeline, get_task

    answer = get_task("text-generation", name="answer")
    pipeline = Pipeline(answer, source="instructions.jsonl", name="answers")
    result = pipeline.run()              # out/answers/answer.jsonl, resumable
    result.dataset                       # the rows as a datasets.Dataset

Everything that can be checked before the first LLM call is: the step graph, the runtime
parameters, the source's first row and every step's input columns, and the output folder (a
folder holding another pipeline's run is refused, a folder holding this pipeline's run resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.pipeline.base import Sink, SinkWriter, Source
from taskloom.pipeline.executor import Executor, RunStats
from taskloom.pipeline.graph import Flow, Graph, PipelineError
from taskloom.steps import JoinStep, Step
from taskloom.tasks.base import Task
from taskloom.typing import GenerateOutput, Row
from taskloom.work import Call, run_work

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger("taskloom.pipeline")

DEFAULT_OUTPUT = Path("out")
Progress = Callable[[RunStats], None]


@dataclass
class RunResult:
    """What a run made: where, how it went, and each sink's result."""

    output_dir: Path
    stats: RunStats
    leaves: list[str]
    sinks: dict[str, Any] = field(default_factory=dict)
    """Each sink's ``result()`` by its type name (a path, a ``datasets.Dataset``...)."""
    files: dict[str, Path] = field(default_factory=dict)
    """The JSONL file of each leaf step, when a JSONL sink ran."""

    @property
    def dataset(self) -> datasets.Dataset:
        """The rows of the (single) leaf step as a ``datasets.Dataset`` (memory-mapped)."""
        made = self.sinks.get("dataset")
        if made is not None:
            if isinstance(made, dict):
                if len(made) != 1:
                    raise PipelineError(f"This pipeline has several leaf steps; pick one of {sorted(made)}.")
                return next(iter(made.values()))
            return made
        if len(self.leaves) != 1:
            raise PipelineError(f"This pipeline has several leaf steps; use datasets_by_leaf()[name] ({self.leaves}).")
        return self.datasets_by_leaf()[self.leaves[0]]

    def datasets_by_leaf(self) -> dict[str, datasets.Dataset]:
        """A ``datasets.Dataset`` per leaf step, read from its JSONL output."""
        import datasets

        if not self.files:
            raise PipelineError("No JSONL output to read: add a 'jsonl' or a 'dataset' sink.")
        return {leaf: datasets.Dataset.from_json(str(path)) for leaf, path in self.files.items()}

    def rows(self, leaf: str | None = None) -> Iterator[Row]:
        """The output rows of a leaf step, streamed from its JSONL file."""
        import json

        name = leaf or (self.leaves[0] if len(self.leaves) == 1 else None)
        if name is None or name not in self.files:
            raise PipelineError(f"Name one of the leaf steps with a JSONL output: {sorted(self.files)}.")
        with self.files[name].open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


@dataclass
class DryRunStep:
    """One step of a dry run: what it received, what it sent to the LLM, what it made."""

    name: str
    inputs: list[Row]
    formatted: list[Any]
    """Every chat the step sent to its LLM, in the order it asked (several per row for a plan)."""
    outputs: list[Row]


class Pipeline:
    """A source, steps joined with ``>>`` (or a list for a chain), and sinks."""

    def __init__(
        self,
        steps: Step | Flow | Sequence[Step | Flow],
        *,
        source: Source | Sequence[Row] | str | Path | Any | None = None,
        sinks: Sequence[Sink] | None = None,
        name: str = "pipeline",
        window: int | None = None,
    ) -> None:
        if isinstance(steps, Step | Flow):
            flow = Flow.of(steps)
        else:  # a list is a chain: [a, b, c] means a >> b >> c
            flow = Flow.of(steps[0]) if steps else Flow()
            for item in list(steps)[1:]:
                flow = flow >> item
        self.graph = Graph.build(flow)
        self.name = name
        self.source = _as_source(source) if source is not None else None
        self.sinks: list[Sink] = list(sinks) if sinks is not None else []
        self.window = window

    @property
    def steps(self) -> dict[str, Step]:
        return self.graph.steps

    # -- checks ------------------------------------------------------------------------------

    def set_parameters(self, parameters: Mapping[str, Mapping[str, Any]] | None) -> None:
        """Apply runtime parameters per step: ``{"answer": {"llm": {"generation_kwargs": {...}}}}``."""
        for step_name, values in (parameters or {}).items():
            step = self.graph.steps.get(step_name)
            if step is None:
                raise PipelineError(
                    f"Runtime parameters name the step {step_name!r}, which this pipeline does not have; "
                    f"its steps are: {', '.join(self.graph.order)}."
                )
            try:
                step.set_runtime_parameters(dict(values))
            except ValueError as error:
                raise PipelineError(f"Runtime parameters of step {step_name!r}: {error}") from error

    def _source(self, source: Any) -> Source:
        chosen = _as_source(source) if source is not None else self.source
        if chosen is None:
            raise PipelineError("This pipeline has no source: pass source=... to Pipeline() or run().")
        return chosen

    def validate(self, parameters: Mapping[str, Mapping[str, Any]] | None = None, *, source: Any = None) -> None:
        """Check everything that can fail before an LLM call: parameters, source, columns."""
        self._prepare(parameters, source)

    def _prepare(self, parameters: Mapping[str, Mapping[str, Any]] | None, source: Any) -> tuple[Source, Row]:
        """Apply the parameters and check the columns; the source to read and its first row."""
        self.set_parameters(parameters)
        chosen = self._source(source)
        first = chosen.first_row()
        self.graph.columns(list(first))
        return chosen, first

    def describe(self, *, source: Any = None) -> dict[str, Any]:
        """The DAG with each step's columns and runtime parameters (``taskloom show``)."""
        chosen = _as_source(source) if source is not None else self.source
        columns: list[str] | None = None
        if chosen is not None:
            with contextlib.suppress(Exception):
                columns = list(chosen.first_row())
        return {
            "name": self.name,
            "source": chosen.describe() if chosen is not None else None,
            "source_columns": columns,
            "steps": self.graph.describe(columns),
            "leaves": self.graph.leaves,
            "sinks": [sink.type_name() for sink in self.sinks] or ["jsonl"],
        }

    def signature(self) -> dict[str, Any]:
        """What makes this pipeline itself (not its parameters): the run folder is keyed by it."""
        return {
            "name": self.name,
            "steps": [{"name": n, "type": self.graph.steps[n].type_name()} for n in self.graph.order],
            "edges": [[parent, child] for child in self.graph.order for parent in self.graph.parents[child]],
        }

    # -- running -----------------------------------------------------------------------------

    def dry_run(
        self, parameters: Mapping[str, Mapping[str, Any]] | None = None, *, source: Any = None
    ) -> list[DryRunStep]:
        """Send one row through every step, showing what each LLM is asked; nothing is cached or written."""
        _, first = self._prepare(parameters, source)
        made: dict[str, list[Row]] = {}
        report: list[DryRunStep] = []
        for name in self.graph.order:
            step = self.graph.steps[name]
            parents = self.graph.parents[name]
            branches = [made[p] for p in parents] if parents else [[dict(first)]]
            inputs = [row for branch in branches for row in branch]
            asked: list[Any] = []
            step.load()
            try:
                if isinstance(step, JoinStep) and parents:
                    outputs = step.join(branches)
                elif isinstance(step, Task):
                    outputs = run_work(step.work([dict(r) for r in inputs]), _recording(step, asked))
                else:
                    outputs = run_work(step.work([dict(r) for r in inputs]))
            finally:
                step.unload()
            made[name] = outputs
            report.append(DryRunStep(name, inputs, asked, outputs))
        return report

    def run(
        self,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: Any = None,
        output: str | Path | None = None,
        use_cache: bool = True,
        progress: Progress | None = None,
        progress_interval: float = 0.5,
    ) -> RunResult:
        """Run the pipeline into ``output`` (default ``out/<name>``); a rerun there resumes from its cache."""
        from taskloom.pipeline.run_folder import RunFolder
        from taskloom.registry import get_sink

        chosen, _ = self._prepare(parameters, source)
        target = Path(output) if output is not None else DEFAULT_OUTPUT / self.name
        folder = RunFolder(target, self.name, self.signature())
        folder.claim()
        sinks = self.sinks or [get_sink("jsonl")]
        leaves = self.graph.leaves
        with folder.lock():
            cache, key, identity = _open_cache(folder.cache_path) if use_cache else (None, _no_key, _no_identity)
            writers: dict[str, list[SinkWriter]] = {leaf: [] for leaf in leaves}
            loaded: list[Step] = []
            stats: RunStats | None = None
            try:
                for leaf in leaves:
                    for sink in sinks:
                        writers[leaf].append(sink.open(folder.data_dir, leaf))
                for name in self.graph.order:
                    self.graph.steps[name].load()
                    loaded.append(self.graph.steps[name])
                executor = Executor(
                    self.graph,
                    chosen,
                    writers,
                    cache,
                    key,
                    identity,
                    window=self.window or _window(self.graph),
                )
                stats = _run_coroutine(self._drive(executor, progress, progress_interval))
            finally:
                for writer in (w for ws in writers.values() for w in ws):
                    try:
                        writer.close()
                    except Exception:  # keep closing the others; the first error is already raising
                        logger.exception("A sink failed to close")
                for step in reversed(loaded):
                    step.unload()
                if cache is not None:
                    cache.close()
        result = RunResult(folder.data_dir, stats, leaves)
        for sink in sinks:
            result.sinks[sink.type_name()] = sink.result()
        jsonl = result.sinks.get("jsonl")
        if isinstance(jsonl, dict):
            result.files = {str(k): Path(v) for k, v in jsonl.items()}
        elif jsonl is not None and len(leaves) == 1:
            result.files = {leaves[0]: Path(jsonl)}
        return result

    async def _drive(self, executor: Executor, progress: Progress | None, interval: float) -> RunStats:
        try:
            return await self._drive_with_progress(executor, progress, interval)
        finally:
            await self._close_clients()

    async def _close_clients(self) -> None:
        """Close every async LLM's clients on this loop, which ends with the run."""
        from taskloom.llms.async_llm import AsyncLLM

        for step in self.graph.steps.values():
            if isinstance(step, Task) and isinstance(step.llm, AsyncLLM):
                try:
                    await step.llm.aclose()
                except Exception:  # closing is best effort; the run's own outcome matters more
                    logger.debug("closing the clients of %s failed", step.llm.model_name, exc_info=True)

    async def _drive_with_progress(self, executor: Executor, progress: Progress | None, interval: float) -> RunStats:
        if progress is None:
            return await executor.run()

        async def tick() -> None:
            while True:
                progress(executor.stats)
                await asyncio.sleep(interval)

        ticker = asyncio.ensure_future(tick())
        try:
            return await executor.run()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            progress(executor.stats)


def _recording(task: Task, asked: list[Any]) -> Callable[[list[Call]], list[GenerateOutput]]:
    """The task's own synchronous ask, noting every chat it sends (what a dry run shows)."""

    def ask(calls: list[Call]) -> list[GenerateOutput]:
        asked.extend(call.chat for call in calls)
        return task._generate_calls(calls)

    return ask


def _open_cache(path: Path) -> tuple[Any, Any, Any]:
    from taskloom.pipeline.cache import GenerationCache, generation_key, llm_identity

    return GenerationCache(path), generation_key, llm_identity


def _no_key(identity: str, chat: Any, kwargs: Any, index: int) -> str:
    return ""


def _no_identity(llm: Any) -> str:
    return ""


def _window(graph: Graph) -> int:
    """Rows read ahead of the writer: room for every LLM step's requests, several times over."""
    from taskloom.llms.async_llm import AsyncLLM

    widest = max(
        (
            step.llm.max_concurrency
            for step in graph.steps.values()
            if isinstance(step, Task) and isinstance(step.llm, AsyncLLM)
        ),
        default=1,
    )
    return max(1024, 8 * widest)


def _run_coroutine(coro: Any) -> Any:
    """Run on a fresh loop; from inside a running loop (a notebook), on a fresh loop in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=target, name="taskloom-pipeline")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _as_source(source: Any) -> Source:
    from taskloom.pipeline.sources import source_for

    chosen: Source = source_for(source)
    return chosen
