"""The local executor: every row streams through the DAG on one event loop.

Why it is shaped this way:

* **No batch barrier.** An LLM step starts a request for each row as soon as the row arrives, up
  to the LLM's ``max_concurrency`` in flight, so a slow row never holds back the rows after it
  (distilabel waits for a whole batch before starting the next one, which caps throughput).
* **Rows carry their source position** (``seq``) between steps. Steps may finish rows in any
  order; sinks put them back in input order with a small reorder buffer, and joins pair the rows
  of several branches by ``seq``.
* **Bounded memory.** The source hands out at most ``window`` rows that are not yet written; it
  waits for a ticket before reading the next row, so a million-row file streams in constant
  memory.
* **Never pay twice.** Each generation is looked up in the cache before a request and written to
  it as soon as it arrives, so a killed run, started again, only asks for what it never got.
* Sync LLMs and ordinary steps run in worker threads; cheap column steps run on the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from taskloom.llms.async_llm import AsyncLLM
from taskloom.llms.outputs import token_counts
from taskloom.pipeline.base import SinkWriter, Source
from taskloom.pipeline.graph import Graph
from taskloom.steps import JoinStep, Step
from taskloom.tasks.base import Task, row_errors
from taskloom.typing import ChatType, GenerateOutput, Row
from taskloom.work import Call, RowWork, run_work

if TYPE_CHECKING:
    from taskloom.pipeline.cache import CachedGeneration

logger = logging.getLogger("taskloom.pipeline")

_END = object()
SOURCE_CHUNK = 256


CacheEntry = tuple[str, str | None, int | None, int | None]


class Cache(Protocol):
    """What the executor needs from a generation cache (``GenerationCache``); None runs without one."""

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]: ...

    def put_many(self, entries: list[CacheEntry]) -> None: ...

    def __len__(self) -> int: ...


class _CacheWriter:
    """Commits finished generations from a thread of its own, so SQLite never blocks the loop.

    Each arriving generation is queued at once and committed within about a millisecond (the
    writer drains the queue into one transaction at a time), so a SIGKILL loses at most the
    handful still queued: those few are asked again on resume, never the ones committed.
    """

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.queue: queue.SimpleQueue[list[CacheEntry] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, name="taskloom-cache-writer", daemon=True)
        self.thread.start()

    def put_many(self, entries: list[CacheEntry]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(entries)

    def _drain(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = list(first)
            stop = False
            while True:  # take everything already waiting into the same transaction
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            try:
                self.cache.put_many(batch)
            except BaseException as error:  # reported on the next put and at close
                self.error = error
                return
            if stop:
                return

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


KeyFunction = Callable[[str, ChatType, dict[str, Any], int], str]


@dataclass
class StepStats:
    """Counters for one step, read by the progress display and the end-of-run summary."""

    name: str
    is_task: bool = False
    rows_in: int = 0
    rows_out: int = 0
    rows_failed: int = 0
    requests: int = 0
    in_flight: int = 0
    retries: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class RunStats:
    """Counters for a whole run."""

    steps: dict[str, StepStats]
    total: int | None = None
    read: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.steps.values())

    @property
    def failed(self) -> int:
        return sum(s.rows_failed for s in self.steps.values())

    @property
    def tokens(self) -> tuple[int, int]:
        return (
            sum(s.input_tokens for s in self.steps.values()),
            sum(s.output_tokens for s in self.steps.values()),
        )


@dataclass
class _Unit:
    """The rows one source row became at some step; ``branches`` set when they go to a join."""

    seq: int
    rows: list[Row]
    branches: list[list[Row]] | None = None


class _Node:
    """A step in the running graph: its inbox, its children and its counters."""

    def __init__(self, step: Step, parents: list[str], stats: StepStats) -> None:
        self.step = step
        self.parents = parents
        self.stats = stats
        self.inbox: asyncio.Queue[tuple[int, Any, list[Row]]] = asyncio.Queue()
        self.targets: list[tuple[_Node, int]] = []  # (child, this node's position among its parents)
        self.leaf_writers: list[_LeafCollector] = []
        self.semaphore: asyncio.Semaphore | None = None
        self.identity = ""


class _LeafCollector:
    """Writes one leaf's rows in input order, whatever order they finish in."""

    def __init__(self, writers: list[SinkWriter], on_written: Callable[[int], None]) -> None:
        self.writers = writers
        self.on_written = on_written
        self.pending: dict[int, list[Row]] = {}
        self.next_seq = 0

    def add(self, seq: int, rows: list[Row]) -> None:
        self.pending[seq] = rows
        if seq != self.next_seq:
            return
        ready: list[Row] = []
        written: list[int] = []
        while self.next_seq in self.pending:
            ready.extend(self.pending.pop(self.next_seq))
            written.append(self.next_seq)
            self.next_seq += 1
        if ready:
            for writer in self.writers:
                writer.write(ready)
        for done in written:
            self.on_written(done)


class Executor:
    """Runs a checked graph from a source into sink writers, with a cache, on the running loop."""

    def __init__(
        self,
        graph: Graph,
        source: Source,
        writers: dict[str, list[SinkWriter]],
        cache: Cache | None,
        key: KeyFunction,
        identity: Callable[[Any], str],
        *,
        window: int = 2048,
    ) -> None:
        self.graph = graph
        self.source = source
        self.cache = cache
        self.key = key
        self.window = window
        self.stats = RunStats(
            steps={name: StepStats(name, is_task=isinstance(step, Task)) for name, step in graph.steps.items()}
        )
        self._writers = writers
        self._identity = identity
        self._leaves_left: dict[int, int] = {}
        self._tickets: asyncio.Semaphore | None = None

    # -- wiring ------------------------------------------------------------------------------

    def _build(self) -> dict[str, _Node]:
        nodes = {
            name: _Node(self.graph.steps[name], self.graph.parents[name], self.stats.steps[name])
            for name in self.graph.order
        }
        for node in nodes.values():
            for position, parent in enumerate(node.parents):
                nodes[parent].targets.append((node, position))
            step = node.step
            if isinstance(step, Task):
                llm = step.resolve_llm()
                node.semaphore = asyncio.Semaphore(llm.max_concurrency if isinstance(llm, AsyncLLM) else 1)
                node.identity = self._identity(llm)
        leaves = self.graph.leaves
        for leaf in leaves:
            nodes[leaf].leaf_writers.append(_LeafCollector(self._writers.get(leaf, []), self._written))
        self._leaf_count = len(leaves)
        return nodes

    def _written(self, seq: int) -> None:
        left = self._leaves_left.get(seq, self._leaf_count) - 1
        if left > 0:
            self._leaves_left[seq] = left
            return
        self._leaves_left.pop(seq, None)
        self.stats.done += 1
        assert self._tickets is not None
        self._tickets.release()

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Stream every source row through the graph; raise the first error a step raises."""
        self._tickets = asyncio.Semaphore(self.window)
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A cache that starts empty can only hold what this run wrote: no need to look anything up.
        # Without a cache (--no-cache) there are no keys to compute either.
        self._caching = self.cache is not None
        self._lookups = self.cache is not None and len(self.cache) > 0
        self._writer = _CacheWriter(self.cache) if self.cache is not None else None
        self.stats.total = self.source.count()
        nodes = self._build()
        workers = [asyncio.ensure_future(self._work(node)) for node in nodes.values()]
        feeder = asyncio.ensure_future(self._feed([nodes[root] for root in self.graph.roots]))
        everything = [feeder, *workers]
        try:
            # The first failure (a step's exception, or a row's) cancels the rest and is raised.
            finished: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*everything))
            watched: list[asyncio.Future[Any]] = [finished, self._failure]
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if self._failure.done():
                self._failure.result()
            finished.result()
        finally:
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            if not self._failure.done():
                self._failure.cancel()
            if self._writer is not None:
                await asyncio.to_thread(self._writer.close)
            self.stats.finished = time.monotonic()
        return self.stats

    def _fail(self, error: BaseException) -> None:
        if not self._failure.done():
            self._failure.set_exception(error)

    async def _feed(self, roots: list[_Node]) -> None:
        assert self._tickets is not None
        rows = self.source.rows()
        seq = 0
        while True:
            chunk = await asyncio.to_thread(_take, rows, SOURCE_CHUNK)
            for row in chunk:
                await self._tickets.acquire()
                for node in roots:
                    node.inbox.put_nowait((0, seq, [row]))
                seq += 1
                self.stats.read = seq
            if len(chunk) < SOURCE_CHUNK:
                break
        for node in roots:
            node.inbox.put_nowait((0, _END, []))

    async def _work(self, node: _Node) -> None:
        """Take this node's rows as they come; pass each source row's results on as they finish."""
        expected_ends = max(1, len(node.parents))
        ends = 0
        joining: dict[int, list[list[Row] | None]] = {}
        running: set[asyncio.Task[None]] = set()

        def receive(position: int, seq: Any, rows: list[Row], into: list[_Unit]) -> int:
            if seq is _END:
                return 1
            if len(node.parents) <= 1:
                into.append(_Unit(seq, rows))
                return 0
            slots = joining.setdefault(seq, [None] * len(node.parents))
            slots[position] = rows
            if all(slot is not None for slot in slots):
                del joining[seq]
                branches = [slot for slot in slots if slot is not None]
                if isinstance(node.step, JoinStep):
                    into.append(_Unit(seq, [], branches))
                else:  # any other step after several branches gets their rows one after another
                    into.append(_Unit(seq, [row for branch in branches for row in branch]))
            return 0

        while ends < expected_ends:
            units: list[_Unit] = []
            ends += receive(*await node.inbox.get(), units)
            # Take whatever else already waits, so thread hops and joins work in batches.
            while ends < expected_ends and not node.inbox.empty() and len(units) < 256:
                ends += receive(*node.inbox.get_nowait(), units)
            if not units:
                continue
            if isinstance(node.step, Task):
                for index, unit in enumerate(units, 1):
                    task = asyncio.ensure_future(self._task_unit(node, unit.seq, unit.rows))
                    running.add(task)
                    task.add_done_callback(self._settled(running))
                    if index % 16 == 0:
                        # Let the loop send what is ready before starting more rows: otherwise the
                        # first request waits until hundreds of rows have been formatted.
                        await asyncio.sleep(0)
            else:
                await self._plain_units(node, units)
        if running:
            await asyncio.gather(*list(running))
        for child, position in node.targets:
            child.inbox.put_nowait((position, _END, []))

    def _settled(self, running: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self._fail(task.exception())  # type: ignore[arg-type]

        return done

    def _emit(self, node: _Node, seq: int, rows: list[Row]) -> None:
        node.stats.rows_out += len(rows)
        for child, position in node.targets:
            child.inbox.put_nowait((position, seq, rows))
        for collector in node.leaf_writers:
            collector.add(seq, rows)

    async def _plain_units(self, node: _Node, units: list[_Unit]) -> None:
        step = node.step

        def run_all() -> list[list[Row]]:
            results = []
            for unit in units:
                if unit.branches is not None:
                    assert isinstance(step, JoinStep)
                    node.stats.rows_in += sum(len(branch) for branch in unit.branches)
                    results.append(step.join(unit.branches))
                    continue
                node.stats.rows_in += len(unit.rows)
                results.append(run_work(step.work(unit.rows)) if unit.rows else [])
            return results

        results = await asyncio.to_thread(run_all) if step.runs_in_thread else run_all()
        for unit, rows in zip(units, results, strict=True):
            self._emit(node, unit.seq, rows)

    async def _task_unit(self, node: _Node, seq: int, rows: list[Row]) -> None:
        if len(rows) == 1:
            out = await self._task_row(node, rows[0])
        else:
            parts = await asyncio.gather(*(self._task_row(node, row) for row in rows))
            out = [row for part in parts for row in part]
        self._emit(node, seq, out)

    async def _task_row(self, node: _Node, row: Row) -> list[Row]:
        """One row through the task's own recipe; each round of its calls runs concurrently."""
        task = node.step
        assert isinstance(task, Task)
        node.stats.rows_in += 1
        built = await self._drive(node, task.work([row]))
        if any(row_errors(out, task.name) for out in built):
            node.stats.rows_failed += 1
        return built

    async def _drive(self, node: _Node, work: RowWork) -> list[Row]:
        """:func:`~taskloom.work.run_work` for the loop: the calls go through the cache and the limit."""
        try:
            calls = next(work)
            while True:
                if len(calls) == 1:
                    outputs = [await self._ask(node, calls[0])]
                else:
                    outputs = list(await asyncio.gather(*(self._ask(node, call) for call in calls)))
                calls = work.send(outputs)
        except StopIteration as done:
            rows: list[Row] = done.value
            return rows

    async def _ask(self, node: _Node, call: Call) -> GenerateOutput:
        """One call's answers: from the cache where it has them, else requested (and then cached)."""
        kwargs = dict(call.kwargs or {})
        n = call.count
        keys = (
            [self.key(node.identity, call.chat, kwargs, i) for i in range(call.first_index, call.first_index + n)]
            if self._caching
            else [""] * n
        )
        answer = _Answer(n)
        missing = answer.fill_from_cache(
            self.cache.get_many(keys) if self._lookups and self.cache is not None else {}, keys
        )
        node.stats.cached += n - len(missing)
        if missing:
            output = await self._request(node, call.chat, len(missing), kwargs)
            fresh = answer.fill_from_request(output, missing, keys)
            if fresh and self._writer is not None:
                self._writer.put_many(fresh)
            node.stats.input_tokens += sum(answer.input_tokens[i] for i in missing)
            node.stats.output_tokens += sum(answer.output_tokens[i] for i in missing)
        return answer.output()

    async def _request(self, node: _Node, chat: ChatType, count: int, kwargs: dict[str, Any]) -> GenerateOutput:
        task = node.step
        assert isinstance(task, Task) and node.semaphore is not None and task.llm is not None
        stats = node.stats

        def retried(error: Exception, attempt: int, wait: float) -> None:
            stats.retries += 1

        async with node.semaphore:
            stats.in_flight += 1
            stats.requests += 1
            try:
                return await task.llm.agenerate_one(chat, count, on_retry=retried, **kwargs)
            finally:
                stats.in_flight -= 1


class _Answer:
    """One call's generations as they are put together from the cache and from a request."""

    def __init__(self, n: int) -> None:
        self.texts: list[str | None] = [None] * n
        self.input_tokens = [0] * n
        self.output_tokens = [0] * n
        self.errors: list[str | None] = [None] * n

    def fill_from_cache(self, hits: dict[str, CachedGeneration], keys: list[str]) -> list[int]:
        """Take what the cache has; the indices it lacks."""
        missing = []
        for index, key in enumerate(keys):
            hit = hits.get(key)
            if hit is None:
                missing.append(index)
                continue
            self.texts[index] = hit.text
            self.input_tokens[index] = hit.input_tokens or 0
            self.output_tokens[index] = hit.output_tokens or 0
        return missing

    def fill_from_request(self, output: GenerateOutput, missing: list[int], keys: list[str]) -> list[CacheEntry]:
        """Put a request's generations at the missing indices; the entries to cache (only texts that came back)."""
        generations = output["generations"]
        tokens_in, tokens_out = token_counts(output.get("statistics"), len(missing))
        error = output.get("error")
        errors = output.get("errors") or []
        fresh: list[CacheEntry] = []
        for position, index in enumerate(missing):
            text = generations[position] if position < len(generations) else None
            failure = (errors[position] if position < len(errors) else None) or error
            self.texts[index] = text
            self.input_tokens[index] = tokens_in[position] or 0
            self.output_tokens[index] = tokens_out[position] or 0
            self.errors[index] = failure
            if text is not None and not failure and keys[index]:
                fresh.append((keys[index], text, tokens_in[position], tokens_out[position]))
        return fresh

    def output(self) -> GenerateOutput:
        result: GenerateOutput = {
            "generations": self.texts,
            "statistics": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }
        if all(self.errors):
            result["error"] = self.errors[0]
        elif any(self.errors):
            result["errors"] = self.errors
        return result


def _take(rows: Iterator[Row], count: int) -> list[Row]:
    return list(itertools.islice(rows, count))
