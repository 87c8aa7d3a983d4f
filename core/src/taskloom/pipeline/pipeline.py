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
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom._collector import run_collector
from taskloom.pipeline.base import Sink, SinkWriter, Source
from taskloom.pipeline.executor import Executor, RunStats
from taskloom.pipeline.graph import Flow, Graph, PipelineError
from taskloom.steps import JoinStep, Step
from taskloom.tasks.base import Task
from taskloom.typing import GenerateOutput, Row
from taskloom.work import Call, run_work

if TYPE_CHECKING:
    import datasets

    from taskloom.pipeline.estimate import RunEstimate
    from taskloom.pipeline.executors import PipelineExecutor, RunRequest
    from taskloom.pipeline.run_folder import RunFolder
    from taskloom.pricing import PriceTable

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
    """The JSONL output of each leaf step, when a JSONL sink ran: one file, or a folder of
    ``part-*.jsonl`` files in row order (an executor that writes a part per shard)."""

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
        return {
            leaf: datasets.Dataset.from_json([str(p) for p in _jsonl_files(path)]) for leaf, path in self.files.items()
        }

    def rows(self, leaf: str | None = None) -> Iterator[Row]:
        """The output rows of a leaf step, streamed from its JSONL file."""
        import json

        name = leaf or (self.leaves[0] if len(self.leaves) == 1 else None)
        if name is None or name not in self.files:
            raise PipelineError(f"Name one of the leaf steps with a JSONL output: {sorted(self.files)}.")
        for path in _jsonl_files(self.files[name]):
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)

    def report(self, *, sample: int = 500) -> Any:
        """The run's report page (a ``taskloom_report.Report``): shown inline in a notebook, ``.save(path)``.

        It lives in the ``taskloom-report`` plugin, so that core never imports a plotting library.
        """
        try:
            from taskloom_report import build_report
        except ImportError as error:
            from taskloom.errors import KNOWN_PACKAGES, TaskloomError

            package = KNOWN_PACKAGES["report"]
            raise TaskloomError(f"The run report comes with the {package} package: pip install {package}") from error
        return build_report(self.output_dir, sample=sample)

    def _repr_html_(self) -> str:
        """The first rows of the (first) leaf as a table, for Jupyter; plain HTML, no plotting library."""
        import html

        from taskloom.html_table import rows_html

        head = html.escape(f"run into {self.output_dir}: {self.stats.done} rows written")
        if not self.files:
            return f"<p>{head}</p>"
        leaf = self.leaves[0] if self.leaves and self.leaves[0] in self.files else next(iter(self.files))
        return f"<p>{head}</p>" + rows_html(self.rows(leaf), total=self.stats.done, caption=leaf)


def _jsonl_files(path: Path) -> list[Path]:
    """A leaf's JSONL output as files in row order: the file itself, or a folder's parts by name."""
    return sorted(path.glob("part-*.jsonl")) if path.is_dir() else [path]


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
        prices: Mapping[str, Any] | None = None,
        card: Mapping[str, Any] | None = None,
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
        from taskloom.pricing import parse_prices

        self.prices = parse_prices(prices, f"pipeline {name!r}: prices")
        self.card: dict[str, Any] = dict(card or {})
        """What the dataset card says beyond the run itself: license, title, description, task_categories, tags."""
        self.origin: str | None = None
        """The pipeline file it was loaded from, for the card's command that reproduces the run."""
        """This pipeline's own prices (dollars per million tokens by model), over the config file's and shipped ones."""

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
        chosen = self.reads(source)
        if chosen is None:
            raise PipelineError(
                "This pipeline has no source: pass source=... to Pipeline() or run(), or start it with a step "
                "that makes rows from nothing (magpie with num_rows)."
            )
        return chosen

    def reads(self, source: Any = None) -> Source | None:
        """The rows a run reads: those given to ``run``, else the pipeline's, else those its first step
        makes from nothing; a pipeline given rows whose first step would make its own is refused
        (one of the two would be ignored)."""
        given = _as_source(source) if source is not None else self.source
        roots = self.graph.roots
        own = self.graph.steps[roots[0]].own_source() if len(roots) == 1 else None
        if own is not None and given is not None:
            raise PipelineError(
                f"step {roots[0]!r} makes its own rows ({own.describe()}) but the pipeline has a source too "
                f"({given.describe()}); drop the source, or the step's num_rows so that it reads the source's rows."
            )
        return given if given is not None else own

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
        chosen = self.reads(source)
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
        asked_by: dict[str, list[Any]] = {}

        def ask_for(task: Task) -> Callable[[list[Call]], list[GenerateOutput]]:
            return _recording(task, asked_by.setdefault(task.name, []))

        return [
            DryRunStep(name, inputs, asked_by.get(name, []), outputs)
            for name, inputs, outputs, _ in self._walk([first], ask_for, load=True)
        ]

    def estimate(
        self,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: Any = None,
        sample: int = 20,
    ) -> RunEstimate:
        """Forecast requests, tokens and dollars per step from ``sample`` source rows; no LLM is called."""
        import itertools

        from taskloom.pipeline.estimate import Forecaster, RunEstimate

        chosen, _ = self._prepare(parameters, source)
        rows = list(itertools.islice(chosen.rows(), max(1, sample)))
        prices = self.price_table()
        forecasters: dict[str, Forecaster] = {}

        def ask_for(task: Task) -> Callable[[list[Call]], list[GenerateOutput]]:
            forecasters[task.name] = Forecaster(task, prices)
            return forecasters[task.name].ask

        import logging

        quiet = logging.getLogger("taskloom.tasks")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # stand-in answers do not parse as a judge's; that is not news
        try:
            for _ in self._walk(rows, ask_for, load=False):
                pass
        finally:
            quiet.setLevel(level)
        total = chosen.count()
        if total is None and _is_file(chosen):
            total = sum(1 for _ in chosen.rows())  # a line count: cheap next to what it forecasts
        scale = total / len(rows) if total is not None and rows else 1.0 / max(1, len(rows))
        steps = []
        for name in self.graph.order:
            if name in forecasters:
                forecasters[name].step.scale = scale
                steps.append(forecasters[name].step)
        notes = [
            f"{s.name}: no price for {s.model!r}; add it under prices (pipeline file or config file) to see dollars."
            for s in steps
            if s.price is None
        ]
        return RunEstimate(steps, len(rows), total, notes)

    def price_table(self) -> PriceTable:
        """The prices in force for this pipeline: its own, over the config file's, over the shipped table."""
        from taskloom.pricing import load_prices

        return load_prices(self.prices)

    def _walk(
        self,
        rows: list[Row],
        ask_for: Callable[[Task], Callable[[list[Call]], list[GenerateOutput]]],
        *,
        load: bool,
    ) -> Iterator[tuple[str, list[Row], list[Row], Step]]:
        """``rows`` through every step in order, each task asking through ``ask_for(task)``."""
        made: dict[str, list[Row]] = {}
        for name in self.graph.order:
            step = self.graph.steps[name]
            parents = self.graph.parents[name]
            branches = [made[p] for p in parents] if parents else [[dict(r) for r in rows]]
            inputs = [row for branch in branches for row in branch]
            loads = load or not isinstance(step, Task)
            held = step.is_loaded()  # loaded by the caller: left loaded afterwards
            if loads:
                step.load()
            try:
                if isinstance(step, JoinStep) and parents:
                    outputs = step.join(branches)
                elif isinstance(step, Task):
                    outputs = run_work(step.work([dict(r) for r in inputs]), ask_for(step))
                else:
                    outputs = run_work(step.work([dict(r) for r in inputs]))
            finally:
                if loads and not held:
                    step.unload()
            made[name] = outputs
            yield name, inputs, outputs, step

    def run(
        self,
        parameters: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: Any = None,
        output: str | Path | None = None,
        use_cache: bool = True,
        progress: Progress | None = None,
        progress_interval: float = 0.5,
        budget_usd: float | None = None,
        max_requests: int | None = None,
        stop_grace: float = 5.0,
        executor: str | PipelineExecutor | None = None,
    ) -> RunResult:
        """Run the pipeline into ``output`` (default ``out/<name>``); a rerun there resumes from its cache.

        ``budget_usd`` and ``max_requests`` cap what this run spends: no request starts that could
        pass them, the rows finished are written, and :class:`~taskloom.errors.BudgetExceededError`
        is raised with the result. Ctrl-C or SIGTERM stops starting requests, lets those in flight
        finish for up to ``stop_grace`` seconds (a second signal stops at once), writes every
        finished row and raises :class:`~taskloom.errors.RunInterrupted` (a ``KeyboardInterrupt``).
        Either way the same call resumes from the cache without paying again.

        ``executor`` says where the rows run: ``"local"`` (the default, this process) or the name
        of an installed executor (``"ray"`` with ``taskloom-ray``), or an executor built with its
        settings (``get_executor("ray", address="auto")``). Everything above is checked here,
        before the executor starts, whichever it is.
        """
        from taskloom.pipeline.executors import RunRequest, executor_for

        _exit_quickly()
        runner = executor_for(executor)
        chosen, _ = self._prepare(parameters, source)
        if (budget_usd is not None or max_requests is not None) and not runner.handles_budget:
            raise PipelineError(
                f"The {runner.type_name()!r} executor cannot keep budget_usd or max_requests over all of its "
                "workers yet; run with the local executor to cap the spending, or without the cap."
            )
        if budget_usd is not None or max_requests is not None:
            self._check_budget(budget_usd, max_requests, self.price_table(), chosen)
        request = RunRequest(
            source=chosen,
            output=Path(output) if output is not None else DEFAULT_OUTPUT / self.name,
            use_cache=use_cache,
            progress=progress,
            progress_interval=progress_interval,
            budget_usd=budget_usd,
            max_requests=max_requests,
            stop_grace=stop_grace,
        )
        return runner.run(self, request)

    def _run_local(self, request: RunRequest) -> RunResult:
        """The local executor's run: every row through the steps on one event loop in this process."""
        from taskloom.pipeline.batching import BATCHES_FILENAME, BatchStore
        from taskloom.pipeline.budget import Budget
        from taskloom.pipeline.run_folder import RunFolder
        from taskloom.registry import get_sink

        chosen, budget_usd, max_requests = request.source, request.budget_usd, request.max_requests
        use_cache, progress, progress_interval = request.use_cache, request.progress, request.progress_interval
        prices = self.price_table()
        budget = request.budget
        if budget is None and (budget_usd is not None or max_requests is not None):
            budget = Budget(budget_usd, max_requests)
        folder = RunFolder(request.output, self.name, self.signature())
        folder.claim()
        sinks = self.sinks or [get_sink("jsonl")]
        leaves = self.graph.leaves
        cached = 0
        with folder.lock():
            cache, key, identity = _open_cache(folder.cache_path) if use_cache else (None, _no_key, _no_identity)
            writers: dict[str, list[SinkWriter]] = {leaf: [] for leaf in leaves}
            loaded: list[Step] = []
            executor: Executor | None = None
            try:
                for leaf in leaves:
                    for sink in sinks:
                        writers[leaf].append(sink.open(folder.data_dir, leaf))
                for name in self.graph.order:
                    step = self.graph.steps[name]
                    held = step.is_loaded()  # loaded by the caller: left loaded after the run
                    step.load()
                    if not held:
                        loaded.append(step)
                executor = Executor(
                    self.graph,
                    chosen,
                    writers,
                    cache,
                    key,
                    identity,
                    window=self.window or _window(self.graph),
                    prices=prices,
                    budget=budget,
                    batches=BatchStore(folder.path / BATCHES_FILENAME if use_cache else None),
                )
                with run_collector():
                    _run_coroutine(self._drive(executor, progress, progress_interval, request.stop_grace))
            finally:
                for writer in (w for ws in writers.values() for w in ws):
                    try:
                        writer.close()
                    except Exception:  # keep closing the others; the first error is already raising
                        logger.exception("A sink failed to close")
                for step in reversed(loaded):
                    step.unload()
                if cache is not None:
                    with contextlib.suppress(Exception):
                        cached = len(cache)
                    cache.close()
                if executor is not None and executor.stats.finished is not None:
                    self.record_run(folder, executor.stats, request)
            if executor.stats.stopping is None:
                for sink in sinks:
                    sink.finish(folder.data_dir)
        stats = executor.stats
        result = RunResult(folder.data_dir, stats, leaves)
        for sink in sinks:
            result.sinks[sink.type_name()] = sink.result()
        jsonl = result.sinks.get("jsonl")
        if isinstance(jsonl, dict):
            result.files = {str(k): Path(v) for k, v in jsonl.items()}
        elif jsonl is not None and len(leaves) == 1:
            result.files = {leaves[0]: Path(jsonl)}
        if stats.stopping is not None:
            _raise_stopped(result, stats, cached, budget_usd, max_requests)
        return result

    def record_run(self, folder: RunFolder, stats: RunStats, request: RunRequest) -> None:
        """Write down a run that ended: its counters in ``run.json`` and the dataset card.

        Every executor calls it once, at the end, while it holds the folder's lock. Neither write
        may cost the rows: a failure is logged, not raised.
        """
        from taskloom.pipeline.card import write_card

        with contextlib.suppress(OSError):
            record = _run_record(stats, self.price_table(), request.budget_usd, request.max_requests)
            _record_outputs(record, self.graph)
            folder.record_run(record)
        if not request.card:
            return
        try:
            write_card(self, stats, folder.data_dir)
        except Exception:  # the card describes the data; it must never cost the data
            logger.warning("could not write the dataset card", exc_info=True)

    def _check_budget(
        self, budget_usd: float | None, max_requests: int | None, prices: PriceTable, source: Source
    ) -> None:
        """Refuse, before any request, a budget that cannot be kept or that could not pay for one request."""
        from taskloom.pricing import format_dollars

        if budget_usd is not None and budget_usd <= 0:
            raise PipelineError(f"budget_usd must be a positive number of dollars, got {budget_usd!r}.")
        if max_requests is not None and max_requests < 1:
            raise PipelineError(f"max_requests must be at least 1, got {max_requests!r}.")
        if budget_usd is None:
            return
        for name in self.graph.order:
            step = self.graph.steps[name]
            if not isinstance(step, Task):
                continue
            llm = step.resolve_llm()
            price = prices.price_of(llm)
            if price is None:
                raise PipelineError(
                    f"A dollar budget needs a price for every model, and step {name!r} uses {llm.model_name!r}, "
                    "which has none. Add it to the pipeline file (prices: {"
                    f"{llm.model_name!r}: {{input: ..., output: ...}}}}, dollars per million tokens) or to the "
                    "config file's [prices], or cap the run with max_requests instead."
                )
            if price.input == price.output == 0:
                continue  # a local model: nothing to bound
            if not llm.accepts("max_new_tokens") or llm.options().max_new_tokens is None:
                raise PipelineError(
                    f"A dollar budget needs each request's worst case, and step {name!r} ({llm.model_name}) sets no "
                    "max_new_tokens: set generation_kwargs.max_new_tokens so that a request's cost has a bound."
                )
        forecast = self.estimate(source=source, sample=5)
        for step_estimate in forecast.steps:
            if step_estimate.one_request_usd > budget_usd:
                raise PipelineError(
                    f"The budget of {format_dollars(budget_usd)} cannot pay for one request of step "
                    f"{step_estimate.name!r}: one request to {step_estimate.model} may cost up to "
                    f"{format_dollars(step_estimate.one_request_usd)} ({step_estimate.output_bound}). "
                    "Raise budget_usd or lower max_new_tokens."
                )

    async def _drive(self, executor: Executor, progress: Progress | None, interval: float, grace: float) -> RunStats:
        with _stopping_on_signals(executor, grace):
            try:
                return await self._drive_with_progress(executor, progress, interval)
            finally:
                await self._close_clients()

    async def _close_clients(self) -> None:
        """Close every async LLM's clients on this loop, which ends with the run."""
        from taskloom.llms.async_llm import AsyncLLM

        for step in self.graph.steps.values():
            # resolve_llm: a task whose calls go to more than its own llm (two speakers) closes them all.
            llm = step.resolve_llm() if isinstance(step, Task) and step.llm is not None else None
            if isinstance(llm, AsyncLLM):
                try:
                    await llm.aclose()
                except Exception:  # closing is best effort; the run's own outcome matters more
                    logger.debug("closing the clients of %s failed", llm.model_name, exc_info=True)

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
        asked.extend(call.chat for call in calls if call.run is None)
        return task._generate_calls(calls)

    return ask


@contextlib.contextmanager
def _stopping_on_signals(executor: Executor, grace: float) -> Iterator[None]:
    """Ctrl-C or SIGTERM stops the run cleanly (a second one at once), on the main thread's loop.

    Elsewhere (a notebook runs the pipeline in a thread of its own) signals stay as they are.
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(number: int) -> None:
        received.append(number)
        if len(received) == 1:
            executor.stop("interrupted", grace=grace)
        else:
            executor.abort()

    installed = []
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, on_signal, number)
            installed.append(number)
        except (NotImplementedError, RuntimeError, ValueError):  # not on this platform or loop
            pass
    try:
        yield
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


def _run_record(
    stats: RunStats, prices: PriceTable, budget_usd: float | None, max_requests: int | None
) -> dict[str, Any]:
    """What ``run.json`` keeps of one run: its counters, dollars, limits and how it ended."""
    import datetime

    from taskloom.pricing import PRICES_DATE

    record = stats.as_dict()
    record["ended"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record["budget_usd"] = budget_usd
    record["max_requests"] = max_requests
    record["prices_date"] = PRICES_DATE
    record["prices"] = {
        step.model: prices.lookup(step.model).model_dump()  # type: ignore[union-attr]
        for step in stats.steps.values()
        if step.model is not None and prices.lookup(step.model) is not None
    }
    return record


def _record_outputs(record: dict[str, Any], graph: Graph) -> None:
    """Each step's output columns beside its counters, so a reader of the folder (the report) can
    tell a reply that was kept but not parsed (every output None) from a row that is only sparse."""
    from taskloom.steps import columns_as_dict

    for name, entry in record.get("steps", {}).items():
        step = graph.steps.get(name)
        if step is not None:
            entry["outputs"] = step.output_columns() if isinstance(step, Task) else list(columns_as_dict(step.outputs))


def _raise_stopped(
    result: RunResult, stats: RunStats, cached: int, budget_usd: float | None, max_requests: int | None
) -> None:
    from taskloom.errors import BudgetExceededError, JudgeUnreadableError, RunInterrupted
    from taskloom.pricing import format_dollars

    total = f" of {stats.total}" if stats.total is not None else ""
    written = f"{stats.done}{total} rows written to {result.output_dir}, {cached} generations cached"
    resume = "run the same command again to resume (nothing already answered is paid for again)"
    if stats.stopping == "interrupted":
        raise RunInterrupted(f"Interrupted: {written}; {resume}.", result)
    if stats.stopping == "unreadable":
        raise JudgeUnreadableError(f"{stats.stop_message}\n({written}.)", result)
    if stats.stopping == "max_requests":
        why = f"Stopped at max_requests={max_requests}"
        more = "with a larger max_requests"
    else:
        why = f"Stopped at the budget of {format_dollars(budget_usd)} (spent {stats.cost_text()})"
        more = "with a larger budget"
    raise BudgetExceededError(f"{why}: {written}; {resume} {more}.", result)


def _is_file(source: Source) -> bool:
    from taskloom.pipeline.sources import FileSource

    return isinstance(source, FileSource)


def _open_cache(path: Path) -> tuple[Any, Any, Any]:
    from taskloom.pipeline.cache import GenerationCache, generation_key, llm_identity

    return GenerationCache(path), generation_key, llm_identity


def _no_key(identity: str, chat: Any, kwargs: Any, index: int) -> str:
    return ""


def _no_identity(llm: Any) -> str:
    return ""


def _window(graph: Graph) -> int:
    """Rows read ahead of the writer: room for every LLM step's requests, several times over.

    A step in batch mode sends one job for many rows, so the window holds a whole job's worth.
    """
    from taskloom.pipeline.batching import BATCH_WINDOW

    if any(isinstance(step, Task) and step.resolve_llm().in_batch_mode() for step in graph.steps.values()):
        return BATCH_WINDOW

    widest = max(
        (step.resolve_llm().requests_at_once() for step in graph.steps.values() if isinstance(step, Task)),
        default=1,
    )
    return max(1024, 8 * widest)


@functools.cache
def _exit_quickly() -> None:
    """Once per process: freeze the garbage collector's objects when the interpreter exits.

    At exit CPython tears its modules down with several full collections, each walking every
    object still alive, and a run leaves tens of thousands (the rows it kept, the classes and
    models it built). That was about 160 ms after the last row was written, longer than the run's
    own wind-down. Frozen objects are skipped by those collections; nothing is lost, because the
    process is ending, its files are closed and its cache committed, and CPython never promised
    ``__del__`` for objects alive at exit. Registered at the first run, so a process that never
    runs a pipeline exits as it always did. The price: objects still alive are torn down with
    their modules, in reverse import order, so a library whose finalizer needs its module at that
    point complains on stderr (taskloom's own plugins close what they hold in an exit hook of
    their own); ``TASKLOOM_FAST_EXIT=0`` keeps the interpreter's usual exit.
    """
    import atexit
    import gc
    import os

    if os.environ.get("TASKLOOM_FAST_EXIT", "1") != "0":
        atexit.register(gc.freeze)


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
