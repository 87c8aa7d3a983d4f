"""AnthropicLLM: the Messages API through the official ``anthropic`` SDK.

The SDK is imported only in ``load()`` and the methods that talk to the API, so that importing
this module (to list plugins, to load a dump) costs nothing. Retries are core's: the SDK's own
are switched off, and every SDK failure is translated into one of :mod:`taskloom.errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

import pydantic
from pydantic import BaseModel, Field, PrivateAttr, SecretStr

from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    RequestTimeoutError,
    ServerError,
)
from taskloom.llms import AsyncLLM
from taskloom.llms.http import error_for_status
from taskloom.typing import ChatType, GenerateOutput

logger = logging.getLogger("taskloom.anthropic")

API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MAX_NEW_TOKENS = 1024
_DEFAULT_TOOL_NAME = "structured_output"
_WRAPPED_KEY = "value"
_CLOSING: set[asyncio.Task[Any]] = set()  # clients being closed in the background, kept alive until done


def _key_from_env() -> SecretStr | None:
    value = os.environ.get(API_KEY_ENV)
    return SecretStr(value) if value else None


class AnthropicLLM(AsyncLLM):
    """Claude models through Anthropic's Messages API, or any server that speaks it (llama.cpp...)."""

    registry_name: ClassVar[str | None] = "anthropic"

    model: str = Field(description="Model id, for example 'claude-sonnet-4-5'.")
    base_url: str | None = Field(
        default=None,
        description="API root (without /v1), e.g. 'http://127.0.0.1:8080' for llama-server; None for Anthropic's.",
    )
    api_key: SecretStr | None = Field(
        default_factory=_key_from_env,
        description=f"API key; defaults to ${API_KEY_ENV}. Never dumped.",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one complete answer.")

    _clients: _Clients = PrivateAttr(default_factory=lambda: _Clients())
    _secret: str | None = PrivateAttr(default=None)
    _warned_seed: bool = PrivateAttr(default=False)

    @property
    def model_name(self) -> str:
        return self.model

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self) -> None:
        """Check the key and that the SDK is importable; the client is built on first use.

        The HTTP client is created lazily, on the event loop that first uses it, because its
        connection pool belongs to one loop (the sync facade runs on a loop of its own).
        """
        import anthropic  # noqa: F401  (fail here, not at the first request, if it is missing)

        key = self.api_key if self.api_key is not None else _key_from_env()
        if key is None or not key.get_secret_value():
            raise AuthenticationError(
                f"AnthropicLLM needs an API key: set the environment variable {API_KEY_ENV} "
                "or pass api_key=... (any non-empty value for a local server that ignores it)."
            )
        self._secret = key.get_secret_value()

    def unload(self) -> None:
        """Close the HTTP clients, then stop the sync facade's event loop."""
        for loop, client in self._clients.pop_all():
            _close_on(loop, client)
        self._secret = None
        super().unload()

    async def aclose(self) -> None:
        """Close the client opened on the running loop (the pipeline calls this before its loop ends)."""
        client = self._clients.pop(asyncio.get_running_loop())
        if client is not None:
            await client.close()

    def __copy__(self) -> AnthropicLLM:
        # A shallow copy (model_copy) would share the clients of this object; give it its own.
        copied = super().__copy__()
        copied._clients = _Clients()
        return copied

    def _client(self) -> Any:
        """The client for the running event loop and the current settings, created on first use."""
        if self._secret is None:
            self.load()
        elif self.api_key is not None and self.api_key.get_secret_value() != self._secret:
            self._secret = self.api_key.get_secret_value()  # the key was changed after load()
        loop = asyncio.get_running_loop()
        settings = (self.base_url, self.timeout, self._secret)
        client = self._clients.get(loop, settings)
        if client is None:
            import anthropic

            client = anthropic.AsyncAnthropic(
                api_key=self._secret,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,  # core's RetryPolicy retries, so the SDK must not
            )
            stale = self._clients.put(loop, settings, client)
            if stale is not None:
                _close_on(loop, stale)
        return client

    # -- generation ----------------------------------------------------------------------------

    async def agenerate(
        self,
        input: ChatType,
        num_generations: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
        stop: list[str] | None = None,
        seed: int | None = None,
        structured_output: dict[str, Any] | type[BaseModel] | None = None,
    ) -> GenerateOutput:
        """Ask the Messages API for ``num_generations`` answers to one chat, one request each.

        Args:
            temperature: Sampling temperature, sent only if set (Anthropic's current API refuses it, llama.cpp not).
            top_p: Nucleus sampling mass, sent only if set (Anthropic's current API refuses it, llama.cpp not).
            max_new_tokens: Longest answer in tokens (the API's required max_tokens); None means 1024.
            stop: Strings that end an answer (the API's stop_sequences).
            seed: Unsupported by the Messages API: accepted (configs port across providers), ignored with a warning.
            structured_output: JSON schema or pydantic model; the answer is a forced tool call's arguments, as JSON.
        """
        if seed is not None and not self._warned_seed:
            self._warned_seed = True
            logger.warning(
                "%s: the Anthropic Messages API has no seed; seed=%r is ignored and answers are not reproducible.",
                self.model,
                seed,
            )
        system, messages = _split_system(input)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens,
        }
        if system is not None:
            request["system"] = system
        # SDK 1.0 dropped the sampling arguments from create(), and Anthropic's API version
        # 2026-10-21 (the SDK 2.x default) refuses them with a 400; other servers (llama.cpp)
        # still honour them. So they go in the body as is, and only when asked for.
        sampling = {k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None}
        if sampling:
            request["extra_body"] = sampling
        if stop:
            request["stop_sequences"] = list(stop)
        tool: _Tool | None = None
        if structured_output is not None:
            tool = _Tool.from_schema(structured_output)
            request["tools"] = [tool.definition]
            request["tool_choice"] = {"type": "tool", "name": tool.name}

        client = self._client()
        replies = await _all_or_nothing([self._create(client, request) for _ in range(num_generations)])
        texts: list[str | None] = []
        input_tokens: list[int] = []
        output_tokens: list[int] = []
        for reply in replies:
            text, used_in, used_out = _read_reply(reply, tool)
            texts.append(text)
            input_tokens.append(used_in)
            output_tokens.append(used_out)
        return {"generations": texts, "statistics": {"input_tokens": input_tokens, "output_tokens": output_tokens}}

    async def _create(self, client: Any, request: dict[str, Any]) -> Any:
        """One ``messages.create`` call, its failures translated into taskloom's errors."""
        import anthropic

        try:
            return await client.messages.create(**request)
        except anthropic.APITimeoutError:
            raise RequestTimeoutError(
                f"Anthropic API: no answer within {self.timeout:g} s (timeout={self.timeout:g})."
            ) from None
        except anthropic.APIStatusError as error:
            raise self._status_error(error) from None
        except anthropic.APIConnectionError as error:
            raise ServerError(f"Anthropic API: could not connect to {self._where()}: {self._redact(error)}") from None
        except anthropic.APIResponseValidationError as error:
            raise ServerError(f"Anthropic API: malformed answer: {self._redact(error)}") from None
        except (json.JSONDecodeError, pydantic.ValidationError) as error:  # a body that is not JSON, or not a message
            raise ServerError(
                f"Anthropic API: undecodable answer from {self._where()}: {self._redact(error)}"
            ) from None

    def _status_error(self, error: Any) -> Exception:
        status: int = error.status_code
        detail = self._redact(error.api_message or error.message or f"HTTP {status}")
        message = f"Anthropic API answered HTTP {status}: {detail}"
        return error_for_status(
            status, message, error.response.headers, auth_hint=f"Check the key in {API_KEY_ENV} (or api_key=...)."
        )

    def _redact(self, error: object) -> str:
        text = str(error)
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

    def _where(self) -> str:
        return self.base_url or "api.anthropic.com"


# -- helpers -------------------------------------------------------------------------------------


class _Clients:
    """One SDK client per event loop (its connection pool belongs to that loop).

    Keyed weakly by loop, so a loop that is gone takes its client with it. A copied or pickled
    LLM starts with no clients: connections are never shared between two LLM objects.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple[Any, ...], Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, loop: asyncio.AbstractEventLoop, settings: tuple[Any, ...]) -> Any:
        with self._lock:
            entry = self._by_loop.get(loop)
        return entry[1] if entry is not None and entry[0] == settings else None

    def put(self, loop: asyncio.AbstractEventLoop, settings: tuple[Any, ...], client: Any) -> Any:
        """Keep ``client`` for ``loop``; return the client it replaces (built with older settings)."""
        with self._lock:
            previous = self._by_loop.get(loop)
            self._by_loop[loop] = (settings, client)
        return previous[1] if previous is not None else None

    def pop(self, loop: asyncio.AbstractEventLoop) -> Any:
        with self._lock:
            entry = self._by_loop.pop(loop, None)
        return entry[1] if entry is not None else None

    def pop_all(self) -> list[tuple[asyncio.AbstractEventLoop, Any]]:
        with self._lock:
            entries = [(loop, entry[1]) for loop, entry in self._by_loop.items()]
            self._by_loop = weakref.WeakKeyDictionary()
        return entries

    def __len__(self) -> int:
        return len(self._by_loop)

    def __copy__(self) -> _Clients:
        return _Clients()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Clients:
        return _Clients()

    def __reduce__(self) -> tuple[type[_Clients], tuple[()]]:
        return (_Clients, ())



def _split_system(chat: ChatType) -> tuple[str | None, list[dict[str, Any]]]:
    """The system message(s), joined, and the rest of the chat as Messages API messages."""
    system = [m["content"] for m in chat if m["role"] == "system"]
    messages = [{"role": m["role"], "content": m["content"]} for m in chat if m["role"] != "system"]
    return ("\n\n".join(system) if system else None), messages


class _Tool:
    """The tool a structured answer is forced through: its input schema is the output schema."""

    def __init__(self, name: str, schema: dict[str, Any], wrapped: bool) -> None:
        self.name = name
        self.wrapped = wrapped
        self.definition = {
            "name": name,
            "description": "Give your answer by calling this tool; its arguments are the answer.",
            "input_schema": schema,
        }

    @classmethod
    def from_schema(cls, output: Mapping[str, Any] | type[BaseModel]) -> _Tool:
        if isinstance(output, type) and issubclass(output, BaseModel):
            schema: dict[str, Any] = output.model_json_schema()
        elif isinstance(output, Mapping):
            schema = dict(output)
        else:
            raise BadRequestError(
                "structured_output must be a JSON schema (dict) or a pydantic model class, "
                f"not {type(output).__name__}."
            )
        title = schema.get("title")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64] if isinstance(title, str) and title else _DEFAULT_TOOL_NAME
        # The API wants an object schema for tool input; anything else is wrapped in one.
        if schema.get("type") == "object":
            return cls(name, schema, wrapped=False)
        wrapper = {"type": "object", "properties": {_WRAPPED_KEY: schema}, "required": [_WRAPPED_KEY]}
        if "$defs" in schema:
            wrapper["$defs"] = schema["$defs"]
        return cls(name, wrapper, wrapped=True)

    def answer(self, arguments: Any) -> str:
        if self.wrapped and isinstance(arguments, dict):
            arguments = arguments.get(_WRAPPED_KEY)
        return json.dumps(arguments, ensure_ascii=False)


def _read_reply(reply: Any, tool: _Tool | None) -> tuple[str | None, int, int]:
    """Text (or tool arguments as JSON) and token counts of one Messages API answer."""
    content = getattr(reply, "content", None)
    usage = getattr(reply, "usage", None)
    if not isinstance(content, list) or usage is None or getattr(usage, "output_tokens", None) is None:
        raise ServerError(f"Anthropic API: the answer is not a message (got {type(reply).__name__}).")
    text: str | None = None
    if tool is not None:
        for block in content:
            if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == tool.name:
                text = tool.answer(block.input)
                break
    if text is None:
        parts = [block.text for block in content if getattr(block, "type", None) == "text"]
        text = "".join(parts) if parts else None
    # Prompt tokens read from or written to the prompt cache are counted apart from input_tokens.
    prompt = sum(
        getattr(usage, name, None) or 0
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return text, int(prompt), int(usage.output_tokens)


async def _all_or_nothing(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await all calls concurrently; on the first failure cancel the rest and raise it."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(c) for c in calls]
    for task in tasks:
        # If the loop stops before we look (a sibling input failed and the run ended), a failure
        # must not be reported as "never retrieved" at exit: it was seen, or it no longer matters.
        task.add_done_callback(_retrieve)
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    # Look at every failure (so none is reported as "never retrieved"), raise the first.
    failures = [t.exception() for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
    if failures:
        raise failures[0]  # type: ignore[misc]
    return [task.result() for task in tasks]


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _close_on(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close a client on the loop that owns its connections, if that loop can still run it."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:  # cannot block on our own loop: close in the background
        task = loop.create_task(client.close())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
        return
    if not loop.is_running():  # nothing can drive it any more: let the pool be collected
        return
    future = asyncio.run_coroutine_threadsafe(client.close(), loop)
    try:
        future.result(timeout=5)
    except Exception as error:  # closing is best effort
        logger.debug("closing the Anthropic client failed: %s", error)


__all__ = ["API_KEY_ENV", "DEFAULT_MAX_NEW_TOKENS", "AnthropicLLM"]
