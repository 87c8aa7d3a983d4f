"""Chat completions over plain aiohttp: the default live path of OpenAILLM.

The official SDK costs about half a second to import and most of the client CPU per request
(it validates and transforms every request and response through typed models). A chat
completion is one JSON POST and one JSON answer, so taskloom sends it itself: a process starts
sending in a fraction of the time, and hundreds of requests in flight cost less CPU. The SDK
stays available (``client="sdk"``) and is still used for the Batch API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from taskloom.errors import RequestTimeoutError, ServerError
from taskloom.llms.http import error_for_status
from taskloom_openai.llm import choice_texts, usage_counts

Usage = tuple[int, int] | None


class DirectChatClient:
    """One aiohttp session (bound to the event loop that opened it) posting chat completions."""

    def __init__(self, base_url: str, api_key: str, timeout: float, where: str, redact: Callable[[str], str]) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout = timeout
        self.where = where
        self.redact = redact
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            json_serialize=json.dumps,
        )

    @property
    def is_closed(self) -> bool:
        return bool(self.session.closed)

    async def close(self) -> None:
        await self.session.close()

    async def complete(self, request: dict[str, Any]) -> tuple[list[str | None], Usage]:
        """Send one request; its answers by choice index and (prompt, completion) tokens.

        Raises core's error classes: a status maps through ``error_for_status`` (honouring
        ``Retry-After``), no answer in time is a ``RequestTimeoutError``, a broken connection or
        an answer that is not a chat completion a ``ServerError`` (both retried).
        """
        try:
            async with self.session.post(self.url, json=request) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except TimeoutError:
            raise RequestTimeoutError(f"No answer within {self.timeout:g} s from {self.where}.") from None
        except aiohttp.ClientError as error:
            raise ServerError(f"{self.where}: {self.redact(f'{type(error).__name__}: {error}')}") from None
        if status >= 400:
            raise error_for_status(status, f"{self.where} answered {status}: {self._detail(raw)}", headers)
        try:
            body = json.loads(raw)
        except ValueError:
            raise ServerError(f"{self.where} answered with a malformed body: {self._snippet(raw)}") from None
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise ServerError(f"{self.where} answered without any choice: {self._snippet(raw)}")
        return choice_texts(choices), usage_counts(body)

    def _snippet(self, raw: bytes) -> str:
        return self.redact(raw[:300].decode("utf-8", "replace"))

    def _detail(self, raw: bytes) -> str:
        """The server's error message if it sent one in OpenAI's shape, else the start of the body."""
        try:
            body = json.loads(raw)
        except ValueError:
            return self._snippet(raw) or "(no body)"
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
        return self.redact(str(message)) if message else self._snippet(raw)
