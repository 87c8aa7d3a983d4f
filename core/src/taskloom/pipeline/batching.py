"""Batch APIs in a pipeline: the calls of a step whose LLM is in batch mode, sent as batch jobs.

A provider's batch API (OpenAI's Batch API, Anthropic's Message Batches) answers within hours at
a discount, one job for many requests. A pipeline step whose LLM has ``batch_api`` on therefore
does not send a request per row: its calls wait here, and once no new call has come for a moment
*and* no more can come (every row has reached the step, or the run's window of rows is full),
they go out as one job per answer count and options, in a fixed order (sorted by cache key).

A job's id is written to the run folder (``batches.json``) as soon as the provider gives it,
keyed by a digest of exactly the requests in it. A killed run, started again, finds the same
requests pending (the ones answered before are in the cache) and so the same digest: it collects
that job instead of paying for a new one. The entry is dropped at the end of the run that
collected the job, once every answer is in the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskloom.errors import GenerationError
from taskloom.llms.async_llm import failed_output
from taskloom.llms.base import LLM
from taskloom.typing import ChatType, GenerateOutput

logger = logging.getLogger("taskloom.pipeline")

BATCH_WINDOW = 50_000
"""Rows a run holds in flight when a step is in batch mode: a whole job's worth (OpenAI's limit)."""
LINGER = 0.5
"""Seconds without a new call before the waiting calls may go out as a job."""

BATCHES_FILENAME = "batches.json"


class BatchStore:
    """Submitted, not yet collected jobs by the digest of their requests; a JSON file, or memory."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.collected: set[str] = set()
        if path is not None and path.is_file():
            with contextlib.suppress(ValueError, OSError):
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self.entries = loaded

    def batch_id(self, digest: str) -> str | None:
        entry = self.entries.get(digest)
        return str(entry["batch_id"]) if isinstance(entry, dict) and entry.get("batch_id") else None

    def put(self, digest: str, batch_id: str, llm: str, requests: int) -> None:
        submitted = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.entries[digest] = {"batch_id": batch_id, "llm": llm, "requests": requests, "submitted": submitted}
        self._save()

    def drop_collected(self) -> None:
        """Forget the jobs collected in this run: call it once their answers are in the cache."""
        dropped = [self.entries.pop(digest, None) for digest in self.collected]
        self.collected.clear()
        if any(entry is not None for entry in dropped):
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.entries, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


class _Waiting:
    __slots__ = ("chat", "count", "future", "kwargs", "order")

    def __init__(
        self, order: str, chat: ChatType, count: int, kwargs: dict[str, Any], future: asyncio.Future[GenerateOutput]
    ) -> None:
        self.order = order
        self.chat = chat
        self.count = count
        self.kwargs = kwargs
        self.future = future


class Batcher:
    """The waiting calls of one batch-mode step, and the jobs they go out in."""

    def __init__(
        self,
        llm: LLM,
        identity: str,
        store: BatchStore,
        may_send: Callable[[], bool],
        max_size: int = BATCH_WINDOW,
    ) -> None:
        self.llm = llm
        self.identity = identity
        self.store = store
        self.may_send = may_send
        """Whether no more calls can come (every row reached the step, or the window is full)."""
        self.max_size = min(max_size, llm.max_batch_requests)
        """Requests one job takes: a call counts as the provider counts it (an input, or each generation)."""
        self.size = 0
        self.waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    async def ask(self, order: str, chat: ChatType, count: int, kwargs: dict[str, Any]) -> GenerateOutput:
        """Wait for this call's answers; ``order`` (its first cache key) fixes its place in a job."""
        future: asyncio.Future[GenerateOutput] = asyncio.get_running_loop().create_future()
        requests = self.llm.batch_requests(count)
        if self.waiting and self.size + requests > self.max_size:
            self._send()  # a full job goes now; this call starts the next one
        self.waiting.append(_Waiting(order, chat, count, kwargs, future))
        self.size += requests
        if self.size >= self.max_size:
            self._send()
        else:
            self._arm()
        return await future

    def poke(self) -> None:
        """Something changed that may let the waiting calls go (the step's input ended)."""
        if self.waiting:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(LINGER, self._linger_over)

    def _linger_over(self) -> None:
        self._timer = None
        if not self.waiting:
            return
        if self.may_send():
            self._send()
        else:
            self._arm()  # more calls can still come: look again in a moment

    def _send(self) -> None:
        calls, self.waiting = self.waiting, []
        self.size = 0
        groups: dict[tuple[int, str], list[_Waiting]] = {}
        for call in calls:
            options = json.dumps(call.kwargs, sort_keys=True, default=str)
            groups.setdefault((call.count, options), []).append(call)
        for (count, _), group in groups.items():
            group.sort(key=lambda c: c.order)
            job = asyncio.ensure_future(self._job(group, count))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _job(self, calls: list[_Waiting], count: int) -> None:
        payload = json.dumps([self.identity, count, calls[0].kwargs, [c.order for c in calls]], default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()
        llm = self.llm.model_copy()
        known = self.store.batch_id(digest)
        if known is not None:
            logger.warning("Collecting batch %s submitted by an earlier run (%d requests)", known, len(calls))
        llm.batch_id = known  # type: ignore[attr-defined]
        watcher = asyncio.ensure_future(self._record_id(llm, digest, len(calls)))
        try:
            outputs = await llm.agenerate_batch([c.chat for c in calls], count, **calls[0].kwargs)
        except GenerationError as error:  # the job failed as a whole: each row records it
            outputs = [failed_output(count, error) for _ in calls]
        except BaseException as error:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        finally:
            watcher.cancel()
        self.store.collected.add(digest)  # forgotten at the end of the run, once every answer is cached
        for call, output in zip(calls, outputs, strict=True):
            if not call.future.done():
                call.future.set_result(output)

    async def _record_id(self, llm: LLM, digest: str, requests: int) -> None:
        """Write the job's id to the run folder the moment the provider gives it (a kill may follow)."""
        recorded = self.store.batch_id(digest)
        while True:
            batch_id = getattr(llm, "batch_id", None)
            if batch_id and batch_id != recorded:
                self.store.put(digest, batch_id, f"{llm.type_name()}:{llm.model_name}", requests)
                recorded = batch_id
            await asyncio.sleep(0.1)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for job in list(self._jobs):
            job.cancel()


__all__ = ["BATCHES_FILENAME", "BATCH_WINDOW", "BatchStore", "Batcher"]
