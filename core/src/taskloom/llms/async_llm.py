"""AsyncLLM: providers write one coroutine for one input; batching and sync use come free.

Network-bound providers should keep many requests in flight, so they implement
``async def acomplete(input, num_generations, options)``. Sync callers (a script, a notebook
cell, ``Task.process``) get ``generate``, which runs those coroutines concurrently, bounded by
``max_concurrency``, on an event loop owned by this LLM in a background thread. One loop per LLM
keeps clients that bind to a loop (aiohttp) valid across calls, and works whether or not the
caller's thread already runs a loop (a notebook does).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, ClassVar, TypeVar

from pydantic import Field, PrivateAttr

from taskloom.component import RuntimeParameter
from taskloom.errors import GenerationError, RetryableError
from taskloom.llms.base import LLM
from taskloom.llms.options import GenerationOptions
from taskloom.retry import RetryPolicy
from taskloom.typing import ChatType, GenerateOutput

logger = logging.getLogger("taskloom.llms")

R = TypeVar("R")
OnRetry = Callable[[RetryableError, int, float], None]
_RUNNER_LOCK = threading.Lock()
_ON_RETRY: contextvars.ContextVar[OnRetry | None] = contextvars.ContextVar("taskloom_on_retry", default=None)
REQUEST_GATE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "taskloom_request_gate", default=None
)
"""Set by a run around the requests it makes: called just before each request (each retry too)
is sent, it raises :class:`~taskloom.errors.StopRequested` once the run is stopping, so a request
that waited for a rate limit does not start after a budget stop or a Ctrl-C."""


def check_request_may_start() -> None:
    """Raise :class:`~taskloom.errors.StopRequested` if the run this request belongs to is stopping."""
    gate = REQUEST_GATE.get()
    if gate is not None:
        gate()


def error_text(error: BaseException | str) -> str:
    """How an error is recorded on a row: its class and message."""
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"


def failed_output(num_generations: int, error: BaseException | str) -> GenerateOutput:
    """The output for an input whose request failed for good: no text, the error kept."""
    return {
        "generations": [None] * num_generations,
        "statistics": {"input_tokens": [0] * num_generations, "output_tokens": [0] * num_generations},
        "error": error_text(error),
    }


class _LoopThread:
    """An event loop running forever in a daemon thread, for the sync facade."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "generate() was called from inside this LLM's own event loop; await agenerate_batch() there instead."
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    # A copied or pickled LLM (model_copy, Ray) starts its own loop when it first needs one.
    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return (type(None), ())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class AsyncLLM(LLM):
    """An LLM whose subclasses implement only ``async acomplete`` for one input."""

    max_concurrency: RuntimeParameter[int] = Field(
        default=64, ge=1, description="Most requests in flight at once from one generate call."
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Backoff for rate limits, overloads, server errors and timeouts.",
    )
    _runner: _LoopThread | None = PrivateAttr(default=None)

    retries_each_request: ClassVar[bool] = False
    """True when ``acomplete`` retries its own requests (through :meth:`retrying`), so that one
    failed request among several for an input is retried alone, not with the ones that worked."""

    @abstractmethod
    async def acomplete(self, input: ChatType, num_generations: int, options: GenerationOptions) -> GenerateOutput:
        """Answer one chat input ``num_generations`` times with ``options`` (an instance of ``Options``).

        Raise a :class:`~taskloom.errors.RetryableError` subclass for a transient failure (it is
        retried with ``retry``), a :class:`~taskloom.errors.GenerationError` for a failure that
        belongs to this input only (it is recorded on the row); anything else stops the batch.
        """

    def requests_at_once(self) -> int:
        return self.max_concurrency

    async def retrying(self, attempt: Callable[[], Awaitable[R]]) -> R:
        """Await ``attempt()`` under this LLM's retry policy, reporting retries to whoever asked."""
        return await self.retry.run(attempt, on_retry=_ON_RETRY.get())

    async def _attempt(
        self, input: ChatType, num_generations: int, options: GenerationOptions, on_retry: OnRetry | None
    ) -> GenerateOutput:
        token = _ON_RETRY.set(on_retry)
        try:
            if self.retries_each_request:
                return await self.acomplete(input, num_generations, options)
            return await self.retry.run(lambda: self.acomplete(input, num_generations, options), on_retry=on_retry)
        except GenerationError as error:
            logger.warning("%s: a request failed for good: %s", self.model_name, error)
            return failed_output(num_generations, error)
        finally:
            _ON_RETRY.reset(token)

    async def agenerate_one(
        self, input: ChatType, num_generations: int = 1, *, on_retry: OnRetry | None = None, **kwargs: Any
    ) -> GenerateOutput:
        """Answer one input with retries; a failure for good comes back as a failed output.

        The pipeline executor calls this per row, bounding concurrency itself. ``on_retry`` is
        called with (error, attempt number, seconds to wait) before each retry.
        """
        return await self._attempt(input, num_generations, self.options(kwargs), on_retry)

    async def agenerate_batch(
        self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any
    ) -> list[GenerateOutput]:
        """Answer every input, at most ``max_concurrency`` at once, keeping the input order."""
        return await self.acomplete_batch(list(inputs), num_generations, self.options(kwargs))

    async def acomplete_batch(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        """Every input through ``acomplete`` concurrently; a provider with a batch API overrides this."""
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def one(input: ChatType) -> GenerateOutput:
            async with semaphore:
                return await self._attempt(input, num_generations, options, None)

        tasks = [asyncio.ensure_future(one(i)) for i in inputs]
        if not tasks:
            return []
        try:
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        if pending:
            # One input raised a run-stopping error: stop paying for the others, then raise it.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
        if failed:
            raise failed[0].exception()  # type: ignore[misc]
        return [t.result() for t in tasks]

    def complete(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        return self.run_sync(self.acomplete_batch(inputs, num_generations, options))

    def __copy__(self) -> AsyncLLM:
        # model_copy() is shallow: the copy must not share this LLM's loop thread (unloading one
        # would stop the other's), so it starts its own when it first needs one.
        copied = super().__copy__()
        copied._runner = None
        return copied

    def run_sync(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run a coroutine on this LLM's loop from sync code and return its result."""
        with _RUNNER_LOCK:
            if self._runner is None:
                self._runner = _LoopThread(f"taskloom-{type(self).__name__}")
            runner = self._runner
        return runner.run(coro)

    async def aclose(self) -> None:
        """Close the clients this LLM opened on the running event loop.

        A pipeline awaits it before its loop ends, since a connection pool bound to a loop cannot
        be closed once that loop is gone. Providers with such clients override it.
        """

    def unload(self) -> None:
        with _RUNNER_LOCK:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
