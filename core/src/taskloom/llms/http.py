"""HTTP providers: the base class every JSON-over-HTTP provider builds on, and what it shares.

Providers differ in their request and response shapes, not in what a status code means, how a
key is found, how a connection pool lives with its event loop, or how a failed request among
several for one input is recorded. All of that lives here once (modelled on httpx's split
between a client and its transport): a provider writes only ``body`` and ``parse``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import threading
import time
import weakref
from abc import abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ClassVar, NamedTuple

from pydantic import Field, PrivateAttr, SecretStr

from taskloom.component import RuntimeParameter
from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    GenerationError,
    OverloadedError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeoutError,
    RetryableError,
    ServerError,
    TaskloomError,
)
from taskloom.llms.async_llm import AsyncLLM, check_request_may_start, error_text
from taskloom.llms.limits import REFUSED, Limiter, Settings, estimate_tokens, limiter_key, shared_limiter
from taskloom.llms.outputs import split_evenly
from taskloom.typing import Chat, ChatType, GenerateOutput

logger = logging.getLogger("taskloom.llms")


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or a date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_for_status(
    status: int, message: str, headers: Mapping[str, str] | None = None, *, auth_hint: str = ""
) -> TaskloomError:
    """The core error for an HTTP error status; ``message`` must already be free of secrets.

    429 rate limit, 503/529 overload, 408 timeout and other 5xx are retried by core;
    401/403 stop the run (``auth_hint`` says where the key comes from); other 4xx fail the row.
    """
    wait = retry_after(headers)
    if status == 429 and "quota" in message.lower() and "rate limit" not in message.lower():
        return QuotaExceededError(f"{message}. Add credit or raise the quota, then run again (it resumes).")
    if status == 429:
        return RateLimitError(message, retry_after=wait, status=status)
    if status in (503, 529):
        return OverloadedError(message, retry_after=wait, status=status)
    if status == 408:
        return RequestTimeoutError(message, retry_after=wait, status=status)
    if status in (401, 403):
        return AuthenticationError(f"{message}. {auth_hint}" if auth_hint else message)
    if status >= 500:
        return ServerError(message, retry_after=wait, status=status)
    return BadRequestError(message)


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``***``."""
    return text.replace(secret, "***") if secret else text


# -- the HTTP provider base ------------------------------------------------------------------------


class Reply(NamedTuple):
    """What a provider reads from one response: a text per choice, and the tokens it reports.

    The counts are for the whole response (all its choices); ``None`` when it reports none.
    ``cached_input_tokens`` is the part of ``input_tokens`` read from the provider's prompt cache
    (billed at a lower price).
    """

    texts: list[str | None]
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None


class _Sessions:
    """One aiohttp session per event loop that used the LLM; a copy or a pickle starts with none.

    A session belongs to the loop it was opened on, so it is never shared between loops; keyed
    weakly, so a loop that is gone takes its session with it.
    """

    def __init__(self) -> None:
        self.by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()

    def pop_all(self) -> list[tuple[asyncio.AbstractEventLoop, Any]]:
        with self.lock:
            entries = list(self.by_loop.items())
            self.by_loop = weakref.WeakKeyDictionary()
        return entries

    def __copy__(self) -> _Sessions:
        return _Sessions()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Sessions:
        return _Sessions()

    def __reduce__(self) -> tuple[type[_Sessions], tuple[()]]:
        return (_Sessions, ())


def close_on_loop(loop: asyncio.AbstractEventLoop, close: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run ``close()`` on the loop its client was opened on, from whatever thread we are in."""
    if loop.is_closed():
        return  # nothing can run there any more; the client went with its loop
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    try:
        if current is loop:  # called from inside that loop: cannot wait, so schedule it
            task = loop.create_task(close())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
        elif loop.is_running():  # another thread's loop (the sync facade's, or the caller's)
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        else:
            loop.run_until_complete(close())
    except (RuntimeError, concurrent.futures.TimeoutError) as error:
        logger.debug("could not close an HTTP session: %s", error)


_CLOSING: set[asyncio.Task[Any]] = set()


class HTTPLLM(AsyncLLM):
    """An LLM behind a JSON-over-HTTP API: the base owns everything but the API's own shapes.

    A provider writes :meth:`body` (the JSON of one request) and :meth:`parse` (a
    :class:`Reply` from one response), names its ``path``, ``api_key_env`` and default URL, and
    overrides :meth:`headers` or :meth:`error_detail` only where its API differs from the
    common ``Authorization: Bearer`` / ``{"error": {"message": ...}}``. The base gives it the key
    (from the field, else the named environment variable), one aiohttp session per event loop
    (closed by ``aclose``/``unload``), status codes as core's error classes (``Retry-After``
    honoured), timeouts, malformed answers as retryable server errors, the key redacted from
    every message, and one rule for ``num_generations``: requests of up to ``choices_per_request``
    answers, each retried on its own, and a generation whose request failed for good recorded
    with its error while the others are kept.
    """

    api_key_env: ClassVar[str | None] = None
    """The environment variable the key is read from when ``api_key`` is not set."""
    key_required: ClassVar[bool] = True
    """Whether ``load()`` refuses to start without a key."""
    default_base_url: ClassVar[str] = ""
    """The API root used when ``base_url`` is not set."""
    base_url_env: ClassVar[str | None] = None
    """An environment variable that may name the API root instead (``OPENAI_BASE_URL``)."""
    path: ClassVar[str] = "/chat/completions"
    """Where requests are posted, after the API root."""
    retries_each_request: ClassVar[bool] = True
    tokens_charged_at_request: ClassVar[bool] = True
    """Whether the API counts ``max_new_tokens`` against its tokens limit when a request arrives,
    and gives back nothing for a shorter answer (OpenAI does). False where it corrects the count to
    the tokens generated (Anthropic)."""

    base_url: str | None = Field(default=None, description="API root; None for the provider's own.")
    api_key: SecretStr | None = Field(
        default=None, description="API key; defaults to the provider's environment variable at load(). Never dumped."
    )
    key_env: str | None = Field(
        default=None,
        description="An environment variable to read the key from instead of the provider's own "
        "(several keys of one provider, each a member of a fallback).",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one request's answer.")
    requests_per_minute: RuntimeParameter[int | None] = Field(
        default=None,
        gt=0,
        description="Most requests a minute to this endpoint, key and model (shared by every step using them); "
        "None: what the API's headers report, if anything.",
    )
    tokens_per_minute: RuntimeParameter[int | None] = Field(
        default=None,
        gt=0,
        description="Most tokens (prompt + max_new_tokens, corrected by the reported usage) a minute; "
        "None: what the API's headers report, if anything.",
    )
    adaptive_concurrency: bool = Field(
        default=True,
        description="Back off on 429/529 answers (halve the requests in flight, then grow by one) and adopt "
        "the limits the API's headers report; False: a fixed max_concurrency with retries only.",
    )

    _key: str | None = PrivateAttr(default=None)
    _limiter: Limiter | None = PrivateAttr(default=None)
    _sessions: _Sessions = PrivateAttr(default_factory=_Sessions)

    # -- what a provider writes ------------------------------------------------------------------

    @abstractmethod
    def body(self, input: ChatType, options: Any, n: int) -> dict[str, Any]:
        """The JSON body of one request for ``n`` answers to ``input`` (``n`` is 1 unless
        ``choices_per_request`` allows more)."""

    @abstractmethod
    def parse(self, body: Any, options: Any) -> Reply:
        """The texts and token counts of one response body (to a request made with ``options``).

        A ``KeyError``, ``TypeError``, ``IndexError`` or ``ValueError`` here means the body was
        malformed (retried)."""

    def choices_per_request(self) -> int:
        """How many answers one request may ask for (OpenAI's ``n``); 1 means one request each."""
        return 1

    def path_for(self, input: ChatType) -> str:
        """Where the request for ``input`` is posted: ``path``, unless raw text goes elsewhere
        (OpenAI's ``/completions``)."""
        return self.path

    def headers(self, key: str) -> dict[str, str]:
        """Headers of every request; the key goes in here."""
        return {"Authorization": f"Bearer {key}"} if key else {}

    def error_detail(self, body: Any) -> str | None:
        """The message in an error body: ``{"error": {"message": ...}}``, ``{"error": "..."}``, ``{"message": ...}``."""
        if not isinstance(body, dict):
            return None
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        return str(body["message"]) if body.get("message") else None

    def where(self) -> str:
        """How messages name the server: the model and the API root."""
        return f"{type(self).__name__} ({self.model_name} at {self.api_root()})"

    # -- lifecycle -----------------------------------------------------------------------------------

    def api_root(self) -> str:
        env = os.environ.get(self.base_url_env) if self.base_url_env and not self.base_url else None
        return (self.base_url or env or self.default_base_url).rstrip("/")

    def load(self) -> None:
        """Find the key (the field, else the environment variable); sessions open on first use."""
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        env = self.key_env or self.api_key_env
        if not key and env:
            key = os.environ.get(env, "")
        if not key and self.key_required:
            where = f"set the environment variable {env} or pass" if env else "pass"
            raise AuthenticationError(
                f"{type(self).__name__} needs an API key: {where} api_key=... "
                "(for a local server that checks none, any non-empty value, e.g. api_key='none')."
            )
        self._key = key

    def is_loaded(self) -> bool:
        return self._key is not None

    def unload(self) -> None:
        for loop, session in self._sessions.pop_all():
            close_on_loop(loop, session.close)
        self._key = None
        if self._limiter is not None:
            self._limiter.leave(id(self))
            self._limiter = None
        super().unload()

    async def aclose(self) -> None:
        """Close the session opened on the running loop (a pipeline awaits this before its loop ends)."""
        with self._sessions.lock:
            session = self._sessions.by_loop.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def session(self) -> Any:
        """The aiohttp session for the running loop, opened on first use there."""
        loop = asyncio.get_running_loop()
        sessions = self._sessions  # one read: a private attribute is a slow lookup on a pydantic model
        with sessions.lock:
            session = sessions.by_loop.get(loop)
        if session is None or session.closed:
            import aiohttp

            if self._key is None:
                self.load()
            session = aiohttp.ClientSession(
                headers={"Content-Type": "application/json", **self.headers(self._key or "")},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                json_serialize=json.dumps,
            )
            with sessions.lock:
                sessions.by_loop[loop] = session
        return session

    def loaded_key(self) -> str | None:
        """The key ``load()`` found (None before it): for a provider that hands it to an SDK of its own."""
        return self._key

    def redact(self, text: str) -> str:
        """``text`` without the key in it, whatever the server echoed back."""
        key = self._key or (self.api_key.get_secret_value() if self.api_key is not None else "")
        return redact(text, key if key and key.lower() != "none" else None)

    def __copy__(self) -> HTTPLLM:
        # A shallow copy (model_copy) gets sessions of its own: closing one must not close the other's.
        copied = super().__copy__()
        assert isinstance(copied, HTTPLLM)
        copied._sessions = _Sessions()
        copied._limiter = None
        return copied

    # -- requests --------------------------------------------------------------------------------------

    async def post(self, body: dict[str, Any], path: str | None = None) -> Any:
        """Post one JSON body to ``path`` (default: the provider's) and return the decoded answer."""
        return await self.request("POST", self.path if path is None else path, body)

    async def request(self, method: str, path: str, body: Any = None, *, decode: bool = True) -> Any:
        """One request to ``path`` under the API root (or to a full URL), outside the rate limits.

        For what is not a chat request (a batch job's upload, status or results). Returns the
        decoded JSON, or the raw bytes with ``decode=False`` (a JSONL file); raises core's error
        for what went wrong.
        """
        status, headers, raw = await self._send(method, self._url(path), body)
        self._raise_for_status(status, headers, raw)
        if not decode:
            return raw
        return self._decode(raw)

    def template_from_server(self, messages: Chat) -> str | None:
        """The text a server's chat template makes of ``messages``, from its ``/apply-template``
        (llama.cpp's server offers it beside ``/v1``); None when the server has no such endpoint.

        Sync, for :meth:`~taskloom.llms.LLM.render_chat`: it runs on this LLM's own loop thread,
        so it may be called from a running event loop (a task formatting a row), once per task.
        """
        root = self.api_root().rstrip("/")
        url = (root[: -len("/v1")] if root.endswith("/v1") else root) + "/apply-template"
        try:
            answer = self.run_sync(self.request("POST", url, {"messages": messages}))
        except GenerationError as error:  # 404 from a server without it, or no server at all
            logger.debug("%s renders no chat template at %s: %s", self.where(), url, error)
            return None
        prompt = answer.get("prompt") if isinstance(answer, dict) else None
        return prompt if isinstance(prompt, str) else None

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.api_root() + path

    async def _send(self, method: str, url: str, body: Any) -> tuple[int, Mapping[str, str], bytes]:
        import aiohttp

        try:
            async with self.session().request(method, url, json=body) as response:
                return response.status, response.headers, await response.read()
        except TimeoutError:
            raise RequestTimeoutError(f"{self.where()}: no answer within {self.timeout:g} s (timeout=...).") from None
        except aiohttp.ClientError as error:
            raise ServerError(f"{self.where()}: {self.redact(f'{type(error).__name__}: {error}')}") from None

    def _raise_for_status(self, status: int, headers: Mapping[str, str], raw: bytes) -> None:
        if status >= 400:
            detail = self._detail(raw)
            hint = f"Check the key in {self.api_key_env} (or api_key=...)." if self.api_key_env else ""
            raise error_for_status(status, f"{self.where()} answered HTTP {status}: {detail}", headers, auth_hint=hint)

    def _decode(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(f"{self.where()} answered with a malformed body: {self._snippet(raw)}") from None

    def _snippet(self, raw: bytes) -> str:
        return self.redact(raw[:300].decode("utf-8", "replace")) or "(no body)"

    def _detail(self, raw: bytes) -> str:
        try:
            message = self.error_detail(json.loads(raw))
        except ValueError:
            message = None
        return self.redact(message) if message else self._snippet(raw)

    async def _ask(self, input: ChatType, options: Any, n: int) -> Reply:
        """One chat request for ``n`` answers, within the rate limits, parsed.

        The limiter hears how it ended (status, headers, usage), so every request teaches it; a
        body of the wrong shape is a (retried) server error.
        """
        limiter = self.limiter()
        tokens = estimate_tokens(input, options.max_new_tokens, n) if limiter.counts_tokens else 0
        body = self.body(input, options, n)
        permit = await limiter.acquire(tokens)
        status: int | None = None
        try:
            check_request_may_start()
        except BaseException:
            limiter.release(permit)
            raise
        headers: Mapping[str, str] | None = None
        used: int | None = None
        wait: float | None = None
        try:
            status, headers, raw = await self._send("POST", self._url(self.path_for(input)), body)
            self._raise_for_status(status, headers, raw)
            answer = self._decode(raw)
            try:
                reply = self.parse(answer, options)
            except (KeyError, TypeError, IndexError, ValueError) as error:
                raise ServerError(
                    f"{self.where()} answered with a body it does not recognise ({type(error).__name__}: "
                    f"{self.redact(str(error))}): {self.redact(json.dumps(answer)[:300])}"
                ) from None
            if not reply.texts:
                raise ServerError(
                    f"{self.where()} answered without any answer: {self.redact(json.dumps(answer)[:300])}"
                )
            if reply.input_tokens is not None or reply.output_tokens is not None:
                most = options.max_new_tokens
                charged = most * n if self.tokens_charged_at_request and most is not None else None
                used = (reply.input_tokens or 0) + (charged if charged is not None else reply.output_tokens or 0)
            return reply
        except RetryableError as error:
            wait = error.retry_after
            # A refusal the limiter heard: its buckets pace the retry, so no backoff is added.
            error.paced = status in REFUSED and limiter.paces()
            raise
        finally:
            limiter.release(permit, status=status, headers=headers, used_tokens=used, retry_after=wait)

    def limiter(self) -> Limiter:
        """The rate limiter this LLM shares with every other using the same provider, endpoint, key and model."""
        limiter = self._limiter
        if limiter is None:
            if self._key is None:
                self.load()
            limiter = shared_limiter(limiter_key(type(self), self.api_root(), self._key, self.model_name))
            settings = Settings(
                self.requests_per_minute,
                self.tokens_per_minute,
                self.max_concurrency,
                self.adaptive_concurrency,
                slow_start="max_concurrency" not in self.model_fields_set,
            )
            limiter.join(id(self), settings)
            self._limiter = limiter
        return limiter

    async def acomplete(self, input: ChatType, num_generations: int, options: Any) -> GenerateOutput:
        per_request = max(1, self.choices_per_request())
        first = min(num_generations, per_request)
        sizes = [first] if first > 1 else [1] * num_generations
        replies = await self._gather(input, options, sizes, 0)
        got = sum(len(r.texts) for r in replies if isinstance(r, Reply))
        if first > 1 and isinstance(replies[0], Reply) and got < num_generations:
            # The server gave fewer choices than asked (it ignores ``n``): fill up one by one.
            logger.debug("%s gave %d of %d answers; asking for the rest", self.where(), got, num_generations)
            more = await self._gather(input, options, [1] * (num_generations - got), got)
            replies = [*replies, *more]
        return self._output(replies, sizes if first == 1 else [first] + [1] * (len(replies) - 1), num_generations)

    async def _gather(
        self, input: ChatType, options: Any, sizes: list[int], start: int
    ) -> list[Reply | GenerationError]:
        """One request per size, all at once; each retried on its own.

        With a seed, the request whose first answer is generation ``i`` carries ``seed + i``:
        separate requests with one seed would all sample the same answer, and this way seeded
        generations differ from each other yet repeat from run to run.
        """

        async def one(n: int, index: int) -> Reply:
            seeded = (
                options
                if options.seed is None or index == 0
                else options.model_copy(update={"seed": options.seed + index})
            )
            return await self.retrying(lambda: self._ask(input, seeded, n))

        results: list[Reply | BaseException]
        if len(sizes) == 1:  # the usual case: no task of its own for the one request (hot path)
            try:
                results = [await one(sizes[0], start)]
            except GenerationError as error:
                results = [error]
        else:
            firsts = [start + sum(sizes[:k]) for k in range(len(sizes))]
            results = await asyncio.gather(
                *(one(n, i) for n, i in zip(sizes, firsts, strict=True)), return_exceptions=True
            )
        stopping = [r for r in results if isinstance(r, BaseException) and not isinstance(r, GenerationError)]
        if stopping:
            raise stopping[0]  # a bad key, a bug: every other row would fail the same way
        return [r for r in results if isinstance(r, Reply | GenerationError)]

    def _output(self, replies: list[Reply | GenerationError], sizes: list[int], n: int) -> GenerateOutput:
        texts: list[str | None] = []
        input_tokens: list[int] = []
        output_tokens: list[int] = []
        cached = 0
        errors: list[str | None] = []
        for reply, size in zip(replies, sizes, strict=True):
            if isinstance(reply, GenerationError):
                texts += [None] * size
                input_tokens += [0] * size
                output_tokens += [0] * size
                errors += [error_text(reply)] * size
                continue
            cached += reply.cached_input_tokens or 0
            count = len(reply.texts)
            texts += reply.texts
            errors += [None] * count
            # Every choice saw the prompt once, and the API counts it once: split both so sums stay true.
            input_tokens += split_evenly(reply.input_tokens or 0, count)
            output_tokens += split_evenly(reply.output_tokens or 0, count)
        output: GenerateOutput = {
            "generations": (texts + [None] * n)[:n],
            "statistics": {
                "input_tokens": (input_tokens + [0] * n)[:n],
                "output_tokens": (output_tokens + [0] * n)[:n],
            },
        }
        if cached:
            output["statistics"]["cached_input_tokens"] = cached
        errors = (errors + [None] * n)[:n]
        if all(errors):
            output["error"] = errors[0]
        elif any(errors):
            output["errors"] = errors
        return output
