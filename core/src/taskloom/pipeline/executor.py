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
import copy
import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from taskloom.errors import StopRequested
from taskloom.judging import ungrouped
from taskloom.llms.async_llm import REQUEST_GATE
from taskloom.llms.limits import REFUSED, estimate_tokens
from taskloom.llms.outputs import token_counts
from taskloom.pipeline.base import SinkWriter, Source
from taskloom.pipeline.graph import Graph
from taskloom.steps import JoinStep, Step
from taskloom.tasks.base import Task, row_errors
from taskloom.typing import ChatType, GenerateOutput, Row
from taskloom.work import Call, RowWork, run_work

if TYPE_CHECKING:
    from taskloom.judging import JudgeStatistics
    from taskloom.llms.base import LLM
    from taskloom.llms.limits import Limiter
    from taskloom.pipeline.batching import Batcher, BatchStore
    from taskloom.pipeline.budget import Budget
    from taskloom.pipeline.cache import CachedGeneration
    from taskloom.pricing import Price, PriceTable

logger = logging.getLogger("taskloom.pipeline")

_END = object()
SOURCE_CHUNK = 256
MIN_JUDGED = 20
"""Judged items a judge's ``max_unreadable`` waits for before it may stop a run."""


CacheEntry = tuple[str, str | None, int | None, int | None, str | None]


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
    rate_limited: int = 0
    """Answers 429 (rate limited) or 529/503 (overloaded) this step's requests got, retried or not."""
    stopped: int = 0
    """Rows left unfinished because the run stopped (a budget, a signal); a resume finishes them."""
    cost_usd: float = 0.0
    """Dollars of this run's requests (cached generations cost nothing again)."""
    unpriced_requests: int = 0
    """Requests to a model with no known price: their tokens are counted, their dollars are not."""
    judge: JudgeStatistics | None = field(default=None, repr=False, compare=False)
    """What the step's judge statistics measured so far (a judging task); see :mod:`taskloom.judging`."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows the step left out, by reason (a filter, a deduplication)."""
    measured: dict[str, Any] | None = None
    """What the step measured over all its rows, read at the end of the run (:meth:`Step.measured`)."""
    model: str | None = None
    local: bool = False
    """The model runs on this machine: its tokens cost no dollars."""
    max_concurrency: int | None = None
    limiter: Limiter | None = field(default=None, repr=False, compare=False)
    first_at: float | None = field(default=None, compare=False)
    """Wall-clock time (``time.time()``) the step took its first row; wall clock, not monotonic,
    so the shards of a cluster run, on other machines, give times that compare."""
    last_at: float | None = field(default=None, compare=False)
    """Wall-clock time the step passed its last rows on."""
    request_s: float = field(default=0.0, compare=False)
    """Seconds this step's requests were out, added over every request (they overlap)."""

    @property
    def active_s(self) -> float | None:
        """Seconds from the step's first row to its last: how long it was part of the run.

        Steps stream rows to each other and run at once, so their times overlap and do not add up
        to the run's; the span says when a step was busy, :attr:`request_s` what its LLM took.
        """
        if self.first_at is None or self.last_at is None:
            return None
        return max(0.0, self.last_at - self.first_at)

    @property
    def priced(self) -> bool:
        """Whether every request of this step had a price (so ``cost_usd`` is the whole cost)."""
        return self.unpriced_requests == 0

    def cost_text(self) -> str:
        """Dollars, ``no price``, or dollars plus the requests that had none."""
        if not self.is_task:
            return "-"
        if self.local:
            return "$0 (local)"
        return _cost_text(self.cost_usd, self.unpriced_requests)

    def limits_text(self) -> str:
        """The limits in force for this step's LLM: set or reported rates, the adaptive in-flight limit."""
        described = self.limiter.describe() if self.limiter is not None else ""
        if self.limiter is not None and self.limiter.concurrency() is not None:
            return described
        base = f"{self.max_concurrency} in flight" if self.max_concurrency else ""
        return ", ".join(part for part in (described, base) if part)

    def measured_text(self) -> str:
        """What the step measured (:attr:`measured`) on one line: ``cohen_kappa 0.712 [0.551, 0.840], rows 48``."""
        parts = []
        for name, value in (self.measured or {}).items():
            if isinstance(value, dict) and "value" in value:
                low, high = value.get("ci95") or (None, None)
                interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
                parts.append(f"{name} {value['value']:.3f}{interval}")
            elif isinstance(value, float):
                parts.append(f"{name} {value:.3f}")
            else:
                parts.append(f"{name} {value}")
        return ", ".join(parts)

    def add(self, other: StepStats) -> None:
        """Count ``other``'s work as this step's too: the same step run over another part of the rows.

        Counters add up; the rows left out add up by reason. What cannot be summed from two
        counts (the live limiter) is not; a judge's statistics merge (:meth:`JudgeStatistics.merge`);
        a step's own measurement is taken from whichever part has one (a step that measures sees
        every row: ``needs_all_rows``).
        """
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        if other.judge is not None:
            if self.judge is None:
                self.judge = copy.deepcopy(other.judge)
            else:
                self.judge.merge(other.judge)
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        if other.first_at is not None:
            self.first_at = other.first_at if self.first_at is None else min(self.first_at, other.first_at)
        if other.last_at is not None:
            self.last_at = other.last_at if self.last_at is None else max(self.last_at, other.last_at)
        self.model = self.model or other.model
        self.measured = self.measured or other.measured  # a step that measures runs once (needs_all_rows)
        self.local = self.local or other.local
        self.max_concurrency = self.max_concurrency or other.max_concurrency

    def portable(self) -> StepStats:
        """A copy without the live limiter, to send to another process (a cluster's driver)."""
        return dataclasses.replace(self, limiter=None, dropped=dict(self.dropped))

    def as_dict(self, run_started_at: float | None = None) -> dict[str, Any]:
        """Plain data for ``run.json``; ``run_started_at`` (wall clock) places the step in the run."""
        data: dict[str, Any] = {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_failed": self.rows_failed,
        }
        active = self.active_s
        if active is not None:
            data["active_s"] = round(active, 3)
            if run_started_at is not None and self.first_at is not None:
                data["started_s"] = round(max(0.0, self.first_at - run_started_at), 3)
        if self.dropped:
            data["rows_dropped"] = dict(self.dropped)
        if self.judge is not None:
            data["judge"] = self.judge.summary()
        if self.measured:
            data["measured"] = self.measured
        if self.is_task:
            data.update(
                model=self.model,
                requests=self.requests,
                retries=self.retries,
                rate_limited=self.rate_limited,
                cached=self.cached,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                cost_usd=round(self.cost_usd, 6) if self.priced or self.cost_usd else None,
                unpriced_requests=self.unpriced_requests,
                rows_stopped=self.stopped,
                request_s=round(self.request_s, 3),
                local=self.local,
            )
        return data


_SUMMED = (
    "rows_in",
    "rows_out",
    "rows_failed",
    "requests",
    "in_flight",
    "retries",
    "cached",
    "input_tokens",
    "output_tokens",
    "rate_limited",
    "stopped",
    "cost_usd",
    "unpriced_requests",
    "request_s",
)


@dataclass
class RunStats:
    """Counters for a whole run."""

    steps: dict[str, StepStats]
    total: int | None = None
    read: int = 0
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    """The same start on the wall clock, which the steps' times are read against."""
    finished: float | None = None
    stopping: str | None = None
    """Why the run is stopping or stopped early: ``budget``, ``max_requests``, ``interrupted``,
    ``unreadable`` (a judge past its ``max_unreadable``); None otherwise."""
    stop_message: str | None = None

    @property
    def cost_usd(self) -> float:
        """Dollars of this run's requests, over every step (see :attr:`priced`)."""
        return sum(s.cost_usd for s in self.steps.values())

    @property
    def priced(self) -> bool:
        """Whether every request had a price, so :attr:`cost_usd` is the whole cost."""
        return all(s.priced for s in self.steps.values())

    @property
    def rate_limited(self) -> int:
        return sum(s.rate_limited for s in self.steps.values())

    def cost_text(self) -> str:
        return _cost_text(self.cost_usd, sum(s.unpriced_requests for s in self.steps.values()))

    def add(self, other: RunStats) -> None:
        """Count ``other``'s rows and requests as this run's too (a shard's, say); see :meth:`StepStats.add`."""
        self.read += other.read
        self.done += other.done
        for name, step in other.steps.items():
            if name in self.steps:
                self.steps[name].add(step)
            else:
                self.steps[name] = step.portable()

    def portable(self) -> RunStats:
        """A copy that pickles (no live limiter), to send to another process."""
        return dataclasses.replace(self, steps={name: step.portable() for name, step in self.steps.items()})

    def as_dict(self) -> dict[str, Any]:
        """The run's counters as plain data (``run.json``)."""
        tokens_in, tokens_out = self.tokens
        return {
            "rows_read": self.read,
            "rows_written": self.done,
            "rows_total": self.total,
            "elapsed_s": round(self.elapsed, 3),
            "stopped": self.stopping,
            "requests": sum(s.requests for s in self.steps.values()),
            "rate_limited": self.rate_limited,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cost_usd": round(self.cost_usd, 6) if self.priced or self.cost_usd else None,
            "steps": {name: step.as_dict(self.started_at) for name, step in self.steps.items()},
        }

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
        self.llm: LLM | None = None
        """The LLM that answers this step's calls (its task's ``resolve_llm()``), read once."""
        self.identity = ""
        self.held: dict[int, _Unit] = {}
        """Units waiting for those before them (a step that needs input order)."""
        self.next_seq = 0
        self.price: Price | None = None
        self.batch = False
        self.batcher: Batcher | None = None
        self.upstream_done = False
        self.input_factor = 1.0
        """Reported prompt tokens over estimated ones, the largest seen (budget estimates learn from it)."""


class _LeafCollector:
    """Writes one leaf's rows in input order, whatever order they finish in."""

    def __init__(self, writers: list[SinkWriter], on_written: Callable[[int], None]) -> None:
        self.writers = writers
        self.on_written = on_written
        self.pending: dict[int, list[Row]] = {}
        self.next_seq = 0

    def flush(self) -> None:
        """Write what waits behind a row that will never come (a stopped run): finished rows are not lost."""
        ready = [row for seq in sorted(self.pending) for row in self.pending[seq]]
        done = sorted(self.pending)
        self.pending.clear()
        if ready:
            for writer in self.writers:
                writer.write(ready)
        for seq in done:
            self.on_written(seq)

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
        prices: PriceTable | None = None,
        budget: Budget | None = None,
        batches: BatchStore | None = None,
    ) -> None:
        self.graph = graph
        self.source = source
        self.cache = cache
        self.key = key
        self.window = window
        self.stats = RunStats(
            steps={name: StepStats(name, is_task=isinstance(step, Task)) for name, step in graph.steps.items()}
        )
        self.prices = prices
        self.budget = budget
        self.batches = batches
        self._writers = writers
        self._identity = identity
        self._leaves_left: dict[int, int] = {}
        self._tickets: asyncio.Semaphore | None = None
        self._feeder: asyncio.Future[None] | None = None
        self._collectors: list[_LeafCollector] = []

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
                llm = node.llm = step.resolve_llm()
                concurrency = llm.requests_at_once()
                node.semaphore = asyncio.Semaphore(concurrency)
                node.identity = self._identity(llm)
                node.stats.model = llm.model_name
                node.stats.local = llm.runs_locally
                node.stats.max_concurrency = concurrency
                limiter = getattr(llm, "limiter", None)
                node.stats.limiter = limiter() if callable(limiter) else None
                node.price = self.prices.price_of(llm) if self.prices is not None else None
                node.stats.judge = step.judge_statistics()
                node.batch = llm.in_batch_mode()
                if node.batch:
                    node.batcher = self._batcher(node, llm)
        leaves = self.graph.leaves
        for leaf in leaves:
            collector = _LeafCollector(self._writers.get(leaf, []), self._written)
            nodes[leaf].leaf_writers.append(collector)
            self._collectors.append(collector)
        self._leaf_count = len(leaves)
        return nodes

    def _batcher(self, node: _Node, llm: Any) -> Batcher:
        from taskloom.pipeline.batching import Batcher, BatchStore

        def may_send() -> bool:
            # No more calls can come: every row reached the step, or the window of rows is full.
            window_full = self._tickets is not None and self._tickets.locked()
            return node.upstream_done or window_full or self.stats.stopping is not None

        return Batcher(llm, node.identity, self.batches or BatchStore(None), may_send)

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
        self._feeder = feeder = asyncio.ensure_future(self._feed([nodes[root] for root in self.graph.roots]))
        everything = [feeder, *workers]
        try:
            # The first failure (a step's exception, or a row's) cancels the rest and is raised;
            # an abort (a stop's grace period over, a second Ctrl-C) cancels the rest and returns.
            finished: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*everything))
            finished.add_done_callback(_retrieved)  # an abort leaves it failed or cancelled: not news
            watched: list[asyncio.Future[Any]] = [finished, self._failure]
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if self._failure.done() and not isinstance(self._failure.exception(), _Aborted):
                self._failure.result()
            if finished.done():
                finished.result()
        finally:
            for task in everything:
                task.cancel()
            await asyncio.gather(*everything, return_exceptions=True)
            if not self._failure.done():
                self._failure.cancel()
            for node in nodes.values():
                if node.batcher is not None:
                    node.batcher.cancel()
            for collector in self._collectors:
                collector.flush()
            for node in nodes.values():
                try:
                    node.stats.measured = node.step.measured()
                except Exception:  # a measure over the rows must never cost the rows
                    logger.warning("step %r could not report what it measured", node.step.name, exc_info=True)
            if self._writer is not None:
                await asyncio.to_thread(self._writer.close)
            if self.batches is not None:
                self.batches.drop_collected()  # their answers are committed now
            self.stats.finished = time.monotonic()
        return self.stats

    def _fail(self, error: BaseException) -> None:
        if not self._failure.done():
            self._failure.set_exception(error)

    # -- stopping ------------------------------------------------------------------------------

    def stop(self, reason: str, grace: float | None = None) -> None:
        """Stop starting requests and reading rows; let what is in flight finish (for ``grace`` seconds).

        Rows that needed a request are left unfinished (a resume asks for them); rows already
        answered go on through the graph and are written, so nothing paid for is lost.
        """
        if self.stats.stopping is None:
            self.stats.stopping = reason
            logger.info("stopping the run (%s): no new requests start", reason)
            if self._feeder is not None and not self._feeder.done():
                self._feeder.cancel()
        if grace is not None:
            asyncio.get_running_loop().call_later(grace, self.abort)

    def abort(self) -> None:
        """Stop at once: requests in flight are cancelled (what is cached and written stays)."""
        if self.stats.stopping is None:
            self.stats.stopping = "interrupted"
        if hasattr(self, "_failure"):
            self._fail(_Aborted())

    def _too_unreadable(self, task: Task, judge: JudgeStatistics, limit: float) -> None:
        if self.stats.stopping is not None:
            return
        examples = "\n".join(f"  {i}. {text!r}" for i, text in enumerate(judge.unreadable_examples, 1))
        self.stats.stop_message = (
            f"The judge {task.name!r} could not be read in {judge.unreadable_rate:.0%} of {judge.seen} replies "
            f"(max_unreadable={limit:g}), so the run stopped early. Replies it could not read:\n{examples}\n"
            "A larger model, structured output, or a clearer template usually helps; rows written so far are "
            "kept, and a rerun resumes from the cache."
        )
        self.stop("unreadable")

    def _gate(self) -> None:
        if self.stats.stopping is not None:
            raise StopRequested(f"the run is stopping ({self.stats.stopping})")

    async def _feed(self, roots: list[_Node]) -> None:
        assert self._tickets is not None
        try:
            rows = self.source.rows()
            seq = 0
            while self.stats.stopping is None:
                chunk = await asyncio.to_thread(_take, rows, SOURCE_CHUNK)
                for row in chunk:
                    await self._tickets.acquire()
                    if self.stats.stopping is not None:
                        break
                    for node in roots:
                        node.inbox.put_nowait((0, seq, [row]))
                    seq += 1
                    self.stats.read = seq
                if len(chunk) < SOURCE_CHUNK:
                    break
        except asyncio.CancelledError:
            if self.stats.stopping is None:
                raise
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
            if ends >= expected_ends:
                node.upstream_done = True
            # Take whatever else already waits, so thread hops and joins work in batches.
            while ends < expected_ends and not node.inbox.empty() and len(units) < 256:
                ends += receive(*node.inbox.get_nowait(), units)
            if not units:
                continue
            if node.stats.first_at is None:
                node.stats.first_at = time.time()
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
        if node.held:  # rows after a gap (a row the run stopped before finishing): in order, all the same
            held = [node.held.pop(seq) for seq in sorted(node.held)]
            node.next_seq = held[-1].seq + 1
            await self._plain_units(node, held)
        node.upstream_done = True
        if node.batcher is not None:
            node.batcher.poke()
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
        node.stats.last_at = time.time()
        for child, position in node.targets:
            child.inbox.put_nowait((position, seq, rows))
        for collector in node.leaf_writers:
            collector.add(seq, rows)

    def _in_order(self, node: _Node, units: list[_Unit]) -> list[_Unit]:
        """For a step that must see rows in source order: the units that are next, held ones after."""
        for unit in units:
            node.held[unit.seq] = unit
        ready = []
        while node.next_seq in node.held:
            ready.append(node.held.pop(node.next_seq))
            node.next_seq += 1
        return ready

    async def _plain_units(self, node: _Node, units: list[_Unit]) -> None:
        step = node.step
        if step.needs_input_order:
            units = self._in_order(node, units)
            if not units:
                return

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
        node.stats.dropped = step.dropped()
        for unit, rows in zip(units, results, strict=True):
            self._emit(node, unit.seq, rows)

    async def _task_unit(self, node: _Node, seq: int, rows: list[Row]) -> None:
        try:
            if len(rows) == 1:
                out = await self._task_row(node, rows[0])
            else:
                parts = await asyncio.gather(*(self._task_row(node, row) for row in rows))
                out = [row for part in parts for row in part]
        except StopRequested:
            node.stats.stopped += len(rows)  # unfinished, not failed: a resume finishes it
            return
        self._emit(node, seq, out)

    async def _task_row(self, node: _Node, row: Row) -> list[Row]:
        """One row through the task's own recipe; each round of its calls runs concurrently."""
        task = node.step
        assert isinstance(task, Task)
        node.stats.rows_in += 1
        built = await self._drive(node, task.work([row]))
        if any(row_errors(out, task.name) for out in built):
            node.stats.rows_failed += 1
        judge = node.stats.judge
        if judge is not None:
            for out in built:
                for generation in ungrouped(out, task.output_columns()) if task.group_generations else [out]:
                    judge.add(generation)
            limit = task.max_unreadable
            if limit is not None and judge.seen >= MIN_JUDGED and judge.unreadable_rate > limit:
                self._too_unreadable(task, judge, limit)
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
        if call.run is not None:  # not a request: work that may block, run beside the loop
            return await asyncio.to_thread(call.run)
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
            tokens_in = sum(answer.input_tokens[i] for i in missing)
            tokens_out = sum(answer.output_tokens[i] for i in missing)
            node.stats.input_tokens += tokens_in
            node.stats.output_tokens += tokens_out
            cached_in = output.get("statistics", {}).get("cached_input_tokens") or 0
            members = output.get("answered_by")
            if members and self.prices is not None:
                self._spent_by_member(node, members, answer, missing, cached_in)
            else:
                self._spent(node, node.price, tokens_in, tokens_out, cached_in)
            if self.budget is not None and tokens_in:
                estimated = estimate_tokens(call.chat, None) * len(missing)
                node.input_factor = max(node.input_factor, tokens_in / max(1, estimated))
        return answer.output()

    def _spent(self, node: _Node, price: Price | None, tokens_in: int, tokens_out: int, cached_in: int) -> None:
        if price is None:
            node.stats.unpriced_requests += 1
            return
        dollars = price.cost(tokens_in, tokens_out, cached_in, batch=node.batch)
        node.stats.cost_usd += dollars
        if self.budget is not None:
            self.budget.spend(dollars)

    async def _batched(self, node: _Node, chat: ChatType, count: int, kwargs: dict[str, Any]) -> GenerateOutput:
        """A call of a batch-mode step: it waits for its job (no concurrency limit: the job is one request)."""
        assert node.batcher is not None
        stats = node.stats
        budget = self.budget
        reserved = self._admit(node, chat, count, kwargs)
        order = self.key(node.identity, chat, kwargs, 0) if self._caching else json.dumps(chat, sort_keys=True)
        stats.in_flight += 1
        stats.requests += 1
        sent = time.perf_counter()
        try:
            return await node.batcher.ask(order, chat, count, kwargs)
        finally:
            stats.request_s += time.perf_counter() - sent
            stats.in_flight -= 1
            if budget is not None:
                budget.release(reserved)

    def _admit(self, node: _Node, chat: ChatType, count: int, kwargs: dict[str, Any]) -> float:
        """Reserve a starting request's worst case against the budget; stop the run if it does not fit.

        The reservation, 0 without a budget, goes back through ``budget.release`` when the request ends.
        """
        budget = self.budget
        if budget is None:
            return 0.0
        llm = node.llm
        assert llm is not None
        max_new_tokens = llm.options(kwargs).max_new_tokens
        reserved = budget.estimate(node.price, chat, count, max_new_tokens, node.batch, node.input_factor)
        refusal = budget.admit(reserved)
        if refusal is not None:
            self.stop(refusal)
            raise StopRequested(f"the run is stopping ({refusal})")
        return reserved

    def _spent_by_member(
        self, node: _Node, members: list[str | None], answer: _Answer, missing: list[int], cached_in: int
    ) -> None:
        """A fallback's request: each generation priced by the model of the member that wrote it."""
        assert self.prices is not None
        by_model: dict[str, tuple[int, int]] = {}
        for position, index in enumerate(missing):
            label = members[position] if position < len(members) else None
            model = (label or "").partition(":")[2] or node.stats.model or ""
            tokens_in, tokens_out = by_model.get(model, (0, 0))
            by_model[model] = (tokens_in + answer.input_tokens[index], tokens_out + answer.output_tokens[index])
        for model, (tokens_in, tokens_out) in by_model.items():
            self._spent(node, self.prices.lookup(model), tokens_in, tokens_out, cached_in)
            cached_in = 0

    async def _request(self, node: _Node, chat: ChatType, count: int, kwargs: dict[str, Any]) -> GenerateOutput:
        assert node.semaphore is not None and node.llm is not None
        stats = node.stats
        llm = node.llm

        def retried(error: Exception, attempt: int, wait: float) -> None:
            stats.retries += 1
            if getattr(error, "status", None) in REFUSED:
                stats.rate_limited += 1

        self._gate()
        budget = self.budget
        reserved = 0.0
        if node.batcher is not None:
            return await self._batched(node, chat, count, kwargs)
        try:
            async with node.semaphore:
                self._gate()
                reserved = self._admit(node, chat, count, kwargs)  # only now, as it starts: waiters reserve nothing
                stats.in_flight += 1
                stats.requests += 1
                gate = REQUEST_GATE.set(self._gate)
                sent = time.perf_counter()
                try:
                    output = await llm.agenerate_one(chat, count, on_retry=retried, **kwargs)
                finally:
                    stats.request_s += time.perf_counter() - sent
                    REQUEST_GATE.reset(gate)
                    stats.in_flight -= 1
        finally:
            if budget is not None:
                budget.release(reserved)
        error = output.get("error") or ""
        if error.startswith(("RateLimitError", "OverloadedError")):
            stats.rate_limited += 1  # the last answer, after the retries ran out
        return output


class _Answer:
    """One call's generations as they are put together from the cache and from a request."""

    def __init__(self, n: int) -> None:
        self.texts: list[str | None] = [None] * n
        self.input_tokens = [0] * n
        self.output_tokens = [0] * n
        self.errors: list[str | None] = [None] * n
        self.answered_by: list[str | None] | None = None

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
            if hit.answered_by is not None:
                self.answered_by = self.answered_by or [None] * len(self.texts)
                self.answered_by[index] = hit.answered_by
        return missing

    def fill_from_request(self, output: GenerateOutput, missing: list[int], keys: list[str]) -> list[CacheEntry]:
        """Put a request's generations at the missing indices; the entries to cache (only texts that came back)."""
        generations = output["generations"]
        tokens_in, tokens_out = token_counts(output.get("statistics"), len(missing))
        error = output.get("error")
        errors = output.get("errors") or []
        members = output.get("answered_by")
        if members:
            self.answered_by = self.answered_by or [None] * len(self.texts)
            for position, index in enumerate(missing):
                if position < len(members):
                    self.answered_by[index] = members[position]
        fresh: list[CacheEntry] = []
        for position, index in enumerate(missing):
            text = generations[position] if position < len(generations) else None
            failure = (errors[position] if position < len(errors) else None) or error
            self.texts[index] = text
            self.input_tokens[index] = tokens_in[position] or 0
            self.output_tokens[index] = tokens_out[position] or 0
            self.errors[index] = failure
            if text is not None and not failure and keys[index]:
                member = self.answered_by[index] if self.answered_by is not None else None
                fresh.append((keys[index], text, tokens_in[position], tokens_out[position], member))
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
        if self.answered_by is not None:
            result["answered_by"] = self.answered_by
        return result


def _cost_text(dollars: float, unpriced: int) -> str:
    """Dollars, ``no price`` when nothing had one, or dollars plus the requests that had none."""
    from taskloom.pricing import format_dollars

    if unpriced and not dollars:
        return "no price"
    text = format_dollars(dollars)
    return f"{text} + no price for {unpriced} req" if unpriced else text


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Aborted(Exception):
    """The run was told to stop at once (its grace period is over, or a second Ctrl-C)."""


def _take(rows: Iterator[Row], count: int) -> list[Row]:
    return list(itertools.islice(rows, count))
