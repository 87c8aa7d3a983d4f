"""OpenAILLM: chat completions from OpenAI or any server that speaks its API.

The client is ``openai.AsyncOpenAI`` over the SDK's aiohttp transport (``openai[aiohttp]``),
which keeps hundreds of requests in flight more cheaply than the default one. The SDK's own
retries are off: core's :class:`~taskloom.retry.RetryPolicy` retries every provider the same
way, so this module only turns the SDK's exceptions into core's error classes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator

from taskloom.component import RuntimeParameter
from taskloom.errors import (
    AuthenticationError,
    GenerationError,
    RequestTimeoutError,
    ServerError,
)
from taskloom.llms import AsyncLLM, failed_output
from taskloom.llms.http import error_for_status
from taskloom.typing import ChatType, GenerateOutput

if TYPE_CHECKING:
    import openai

    from taskloom_openai.direct import DirectChatClient

logger = logging.getLogger("taskloom.openai")

API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"

StructuredOutput = dict[str, Any] | type[BaseModel]


class _Clients(dict[tuple[asyncio.AbstractEventLoop, str], Any]):
    """One client per event loop (and kind: "direct" or "sdk") that used this LLM.

    An aiohttp session belongs to the loop it was opened on, so a client is never shared between
    loops. A copied or pickled LLM (``model_copy(deep=True)``, Ray) starts with no client.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _Clients:
        return _Clients()

    def __reduce__(self) -> tuple[type[_Clients], tuple[()]]:
        return (_Clients, ())


class OpenAILLM(AsyncLLM):
    """Chat models from OpenAI, or from any OpenAI-compatible server through ``base_url``.

    Works with vLLM, llama.cpp's ``llama-server``, Ollama, TGI, Together, Groq and the like:
    point ``base_url`` at the server's ``/v1`` root. A local server that checks no key still
    needs a non-empty one, for example ``api_key="none"``.
    """

    registry_name: ClassVar[str | None] = "openai"

    model: str = Field(description="Model id, for example 'gpt-4o-mini', or the name a local server serves.")
    base_url: str | None = Field(
        default=None,
        description="API root of an OpenAI-compatible server (e.g. 'http://localhost:8080/v1'); "
        "None means OpenAI itself (or $OPENAI_BASE_URL).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description=f"API key; defaults to ${API_KEY_ENV} at load(). Never dumped. "
        "Any non-empty string (e.g. 'none') for a local server that checks none.",
    )
    timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for one request's answer.")
    supports_n: bool = Field(
        default=True,
        description="The server honours `n` (several choices per request); if False, num_generations "
        "is served by concurrent requests of one choice each.",
    )
    max_tokens_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        default="auto",
        description="Request field that carries max_new_tokens. 'auto': 'max_completion_tokens' for "
        "OpenAI itself (its reasoning models refuse 'max_tokens'), 'max_tokens' with a base_url "
        "(what every compatible server understands).",
    )
    client: Literal["direct", "sdk"] = Field(
        default="direct",
        description="How live requests are sent: 'direct' posts chat completions with taskloom's own aiohttp "
        "session (starts fast, least CPU per request); 'sdk' goes through the openai SDK's AsyncOpenAI. "
        "The Batch API always uses the SDK.",
    )
    batch_api: bool = Field(
        default=False,
        description="Send each generate() call as one OpenAI Batch API job (cheaper, done within 24 h) "
        "instead of live requests.",
    )
    batch_id: RuntimeParameter[str | None] = Field(
        default=None,
        description="With batch_api: collect this submitted batch instead of submitting a new one. Set on "
        "submission (so a dump taken while the job runs resumes it) and cleared once collected.",
    )
    batch_poll_interval: float = Field(default=30.0, gt=0, description="Seconds between two batch status checks.")
    _api_key: str | None = PrivateAttr(default=None)
    _clients: _Clients = PrivateAttr(default_factory=_Clients)

    @property
    def model_name(self) -> str:
        return self.model

    # A pydantic class is not plain data: keep its JSON schema instead, so dumps stay JSON.
    @field_validator("generation_kwargs")
    @classmethod
    def _schema_as_data(cls, value: dict[str, Any]) -> dict[str, Any]:
        schema = value.get("structured_output")
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            value = {**value, "structured_output": schema.model_json_schema()}
        return value

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Check the key (and the SDK when it is used); clients are opened on first use, on their loop."""
        if self.client == "sdk" or self.batch_api:
            import openai  # noqa: F401  (fail here, not at the first request, if it is missing)

        key = self.api_key.get_secret_value() if self.api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key:
            raise AuthenticationError(
                f"OpenAILLM needs an API key: set {API_KEY_ENV} or pass api_key=... "
                "(for a local server that checks no key, any non-empty string, e.g. api_key='none')."
            )
        self._api_key = key

    def unload(self) -> None:
        clients, self._clients = self._clients, _Clients()
        for (loop, _), client in clients.items():
            _close_on_loop(loop, client)
        self._api_key = None
        super().unload()

    async def aclose(self) -> None:
        """Close the clients opened on the running loop (for callers that await ``agenerate_batch``)."""
        loop = asyncio.get_running_loop()
        for key in [key for key in self._clients if key[0] is loop]:
            await self._clients.pop(key).close()

    def _client(self) -> Any:
        """The live-request client for the running loop: our aiohttp one, or the SDK's."""
        return self._sdk_client() if self.client == "sdk" else self._direct_client()

    def _direct_client(self) -> DirectChatClient:
        from taskloom_openai.direct import DirectChatClient

        key = (asyncio.get_running_loop(), "direct")
        client = self._clients.get(key)
        if client is None:
            base_url = self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
            client = self._clients[key] = DirectChatClient(
                base_url, self._loaded_key(), self.timeout, f"{self._where()} ({self.model})", self._redact
            )
        return client

    def _sdk_client(self) -> openai.AsyncOpenAI:
        key = (asyncio.get_running_loop(), "sdk")
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._new_client(self._loaded_key())
        return client

    def _loaded_key(self) -> str:
        if self._api_key is None:
            raise RuntimeError("OpenAILLM.load() must be called before generating.")
        return self._api_key

    def _new_client(self, key: str) -> openai.AsyncOpenAI:
        import openai

        try:
            http_client = openai.DefaultAioHttpClient(timeout=self.timeout)
        except RuntimeError:  # openai installed without its aiohttp extra: use the default transport
            logger.info("aiohttp is not installed; OpenAILLM uses the SDK's default HTTP transport")
            http_client = None
        return openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0, http_client=http_client
        )

    # -- generation --------------------------------------------------------------------------

    async def agenerate(
        self,
        input: ChatType,
        num_generations: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = 512,
        stop: list[str] | None = None,
        seed: int | None = None,
        structured_output: StructuredOutput | None = None,
    ) -> GenerateOutput:
        """Ask for ``num_generations`` answers to one chat (one request with ``n``, if supported).

        Args:
            temperature: Sampling temperature (0 to 2); None leaves the server's default.
            top_p: Nucleus sampling mass; None leaves the server's default.
            max_new_tokens: Most tokens per answer (sent as max_tokens or max_completion_tokens); None for no limit.
            stop: Up to 4 sequences that end an answer.
            seed: Seed for best-effort reproducible sampling.
            structured_output: A JSON schema (dict) or a pydantic model class the answer must follow (strict).
        """
        params = self._request(input, temperature, top_p, max_new_tokens, stop, seed, structured_output)
        client = self._client()
        if self.supports_n:
            parts = [await self._complete(client, params, num_generations)]
            missing = num_generations - len(parts[0][0])
            if missing > 0:  # the server ignored `n` or gave fewer choices: fill up concurrently
                logger.debug("%s gave %d of %d choices; asking again", self.model, len(parts[0][0]), num_generations)
                parts += await asyncio.gather(*(self._complete(client, params, 1) for _ in range(missing)))
        else:
            parts = list(await asyncio.gather(*(self._complete(client, params, 1) for _ in range(num_generations))))

        texts: list[str | None] = []
        input_tokens: list[int] = []
        output_tokens: list[int] = []
        usage_known = True
        for part_texts, usage in parts:
            texts += part_texts
            if usage is None:
                usage_known = False
                continue
            prompt, completion = usage
            # Every choice of a request saw the same prompt.
            input_tokens += [prompt] * len(part_texts)
            # OpenAI reports one completion_tokens for all n choices of a request, not one per
            # choice: split it as evenly as possible (exact when n == 1, the sum always exact).
            output_tokens += split_evenly(completion, len(part_texts))
        output: GenerateOutput = {"generations": texts[:num_generations], "statistics": {}}
        if usage_known:
            output["statistics"] = {
                "input_tokens": input_tokens[:num_generations],
                "output_tokens": output_tokens[:num_generations],
            }
        return output

    def _request(
        self,
        input: ChatType,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = 512,
        stop: list[str] | None = None,
        seed: int | None = None,
        structured_output: StructuredOutput | None = None,
    ) -> dict[str, Any]:
        """The chat completion request body for one chat (without ``n``); defaults as in agenerate."""
        params: dict[str, Any] = {"model": self.model, "messages": input}
        if temperature is not None:
            params["temperature"] = temperature
        if top_p is not None:
            params["top_p"] = top_p
        if max_new_tokens is not None:
            params[self._max_tokens_field()] = max_new_tokens
        if stop:
            params["stop"] = list(stop)
        if seed is not None:
            params["seed"] = seed
        if structured_output is not None:
            params["response_format"] = response_format(structured_output)
        return params

    def _max_tokens_field(self) -> str:
        if self.max_tokens_parameter != "auto":
            return self.max_tokens_parameter
        return "max_tokens" if self.base_url else "max_completion_tokens"

    async def _complete(
        self, client: Any, params: dict[str, Any], n: int
    ) -> tuple[list[str | None], tuple[int, int] | None]:
        """One request: its answers by choice index, and (prompt_tokens, completion_tokens)."""
        request = dict(params, n=n) if n > 1 else params
        if self.client != "sdk":
            answer: tuple[list[str | None], tuple[int, int] | None] = await client.complete(request)
            return answer
        import openai

        try:
            response = await client.chat.completions.create(**request)
        except openai.OpenAIError as error:
            raise self._translate(error) from (None if self._leaks(error) else error)
        except ValueError as error:  # a body that is not JSON
            raise ServerError(f"{self._where()} answered with a malformed body: {self._redact(str(error))}") from None
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise ServerError(f"{self._where()} answered without any choice: {self._redact(repr(response))[:500]}")
        try:
            ordered = sorted(choices, key=lambda c: c.index if isinstance(c.index, int) else 0)
            texts = [_text(choice) for choice in ordered]
        except AttributeError as error:
            raise ServerError(f"{self._where()} answered with a malformed choice: {error}") from None
        usage = getattr(response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None)
        completion = getattr(usage, "completion_tokens", None)
        if isinstance(prompt, int) and isinstance(completion, int):
            return texts, (prompt, completion)
        return texts, None

    # -- Batch API ---------------------------------------------------------------------------

    async def agenerate_batch(
        self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any
    ) -> list[GenerateOutput]:
        """Answer every input: live requests, or one Batch API job when ``batch_api`` is on."""
        if not self.batch_api:
            return await super().agenerate_batch(inputs, num_generations, **kwargs)
        if not inputs:
            return []
        kwargs = {**self.generation_kwargs, **kwargs}
        self._check_generation_kwargs(kwargs)
        lines = []
        for index, chat in enumerate(inputs):
            body = self._request(chat, **kwargs)
            if num_generations > 1:
                body["n"] = num_generations
            url = "/v1/chat/completions"
            lines.append({"custom_id": f"request-{index}", "method": "POST", "url": url, "body": body})
        payload = "\n".join(json.dumps(line, sort_keys=True) for line in lines).encode()
        digest = hashlib.sha256(payload).hexdigest()
        client = self._sdk_client()

        batch_id = self.batch_id
        if batch_id is None:
            uploaded = await self._call(
                lambda: client.files.create(
                    file=("taskloom-batch.jsonl", payload, "application/jsonl"), purpose="batch"
                )
            )
            batch = await self._call(
                lambda: client.batches.create(
                    input_file_id=uploaded.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={"taskloom_requests_sha256": digest},
                )
            )
            batch_id = self.batch_id = batch.id
            logger.warning(
                "Submitted OpenAI batch %s (%d requests); if this run stops, resume with batch_id=%r.",
                batch_id,
                len(lines),
                batch_id,
            )
        batch = await self._wait_for_batch(client, batch_id, digest)
        outputs = await self._collect_batch(client, batch, len(inputs), num_generations)
        self.batch_id = None  # collected: the next call submits a new job
        return outputs

    async def _call(self, request: Callable[[], Awaitable[Any]]) -> Any:
        """One Batch/Files API call, its errors translated and the transient ones retried."""
        import openai

        async def attempt() -> Any:
            try:
                return await request()
            except openai.OpenAIError as error:
                raise self._translate(error) from (None if self._leaks(error) else error)
            except ValueError as error:
                raise ServerError(f"{self._where()} answered with a malformed body: {error}") from None

        return await self.retry.run(attempt)

    async def _wait_for_batch(self, client: openai.AsyncOpenAI, batch_id: str, digest: str) -> Any:
        while True:
            batch = await self._call(lambda: client.batches.retrieve(batch_id))
            submitted_for = (getattr(batch, "metadata", None) or {}).get("taskloom_requests_sha256")
            if submitted_for and submitted_for != digest:
                raise ValueError(
                    f"OpenAI batch {batch_id} was submitted for other requests than these (different inputs, "
                    "model or generation kwargs); unset batch_id to submit a new batch."
                )
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                return batch
            logger.info("OpenAI batch %s is %s: %s", batch_id, batch.status, getattr(batch, "request_counts", ""))
            await asyncio.sleep(self.batch_poll_interval)

    async def _collect_batch(
        self, client: openai.AsyncOpenAI, batch: Any, num_inputs: int, num_generations: int
    ) -> list[GenerateOutput]:
        if batch.status == "failed":
            self.batch_id = None  # a failed job cannot be resumed; the next call submits again
            raise GenerationError(f"OpenAI batch {batch.id} failed: {self._redact(str(batch.errors))}")
        results: dict[str, Any] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call(functools.partial(client.files.content, file_id))
            for line in content.text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    results[record.get("custom_id")] = record
        outputs: list[GenerateOutput] = []
        for index in range(num_inputs):
            record = results.get(f"request-{index}")
            if record is None:
                missing = f"OpenAI batch {batch.id} ({batch.status}) has no result for this input"
                outputs.append(failed_output(num_generations, missing))
                continue
            response = record.get("response") or {}
            body = response.get("body")
            if response.get("status_code") != 200 or not isinstance(body, dict):
                problem = record.get("error") or body or "no response"
                outputs.append(failed_output(num_generations, f"BadRequestError: {self._redact(json.dumps(problem))}"))
                continue
            outputs.append(_output_from_body(body, num_generations))
        return outputs

    # -- errors ------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"The server at {self.base_url}" if self.base_url else "OpenAI"

    def _redact(self, text: str) -> str:
        key = self._api_key or (self.api_key.get_secret_value() if self.api_key else "")
        return text.replace(key, "[redacted]") if key else text

    def _leaks(self, error: BaseException) -> bool:
        key = self._api_key
        return key is not None and key != "" and key in f"{error} {getattr(error, 'body', '')}"

    def _translate(self, error: openai.OpenAIError) -> Exception:
        """Core's error class for an SDK exception, with the key never in the message."""
        import openai

        message = f"{self._where()} ({self.model}): {self._redact(str(error))}"
        if isinstance(error, openai.APITimeoutError):
            return RequestTimeoutError(f"No answer within {self.timeout:g} s. {message}")
        if isinstance(error, openai.APIConnectionError):
            return ServerError(message)
        if isinstance(error, openai.APIResponseValidationError):
            return ServerError(message, status=error.response.status_code)
        if not isinstance(error, openai.APIStatusError):
            return ServerError(message)
        status = error.status_code
        if " - " not in str(error) and error.body:  # the SDK found no error message: show the body
            detail = error.body if isinstance(error.body, str) else json.dumps(error.body, default=str)
            message += f" - {self._redact(detail.strip()[:300])}"
        return error_for_status(status, message, error.response.headers)


def _text(choice: Any) -> str | None:
    content = choice.message.content
    return content if isinstance(content, str) else None


def choice_texts(choices: list[dict[str, Any]]) -> list[str | None]:
    """The answer of each choice of a chat completion body, in choice order (None: no text)."""
    ordered = sorted(choices, key=lambda c: c.get("index") if isinstance(c.get("index"), int) else 0)
    texts: list[str | None] = []
    for choice in ordered:
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        texts.append(content if isinstance(content, str) else None)
    return texts


def usage_counts(body: dict[str, Any]) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) of a chat completion body, if it reports both."""
    usage = body.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt, completion
    return None


def _output_from_body(body: dict[str, Any], num_generations: int) -> GenerateOutput:
    """A GenerateOutput from one chat completion body (a Batch API result line)."""
    choices = [c for c in body.get("choices") or [] if isinstance(c, dict)]
    texts = choice_texts(choices)[:num_generations]
    got = len(texts)
    texts += [None] * (num_generations - got)
    usage = usage_counts(body)
    output: GenerateOutput = {"generations": texts, "statistics": {}}
    if usage is not None:
        prompt, completion = usage
        output["statistics"] = {
            "input_tokens": [prompt] * got + [0] * (num_generations - got),
            "output_tokens": split_evenly(completion, got) + [0] * (num_generations - got),
        }
    return output


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` integers that differ by at most one and sum to ``total``."""
    if parts <= 0:
        return []
    share, rest = divmod(max(total, 0), parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


def response_format(schema: StructuredOutput) -> dict[str, Any]:
    """The ``response_format`` for an answer that must be JSON valid for ``schema`` (strict mode).

    OpenAI's strict mode wants every object closed (``additionalProperties: false``) and every
    property listed in ``required``; both are added where the schema does not say otherwise.
    """
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        schema = schema.model_json_schema()
    if not isinstance(schema, dict):
        raise TypeError(f"structured_output must be a JSON schema dict or a pydantic model class, not {schema!r}")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_schema(schema), "strict": True}}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with its objects closed, all their properties required, and no string lengths.

    OpenAI documents ``pattern`` and ``format`` as the string keywords strict mode takes, not
    ``minLength``/``maxLength``, and rejects keywords it does not take. Task schemas carry lengths
    to keep a small local model's grammar short; an API model needs neither.
    """
    result = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
            return
        if not isinstance(node, dict):
            return
        node.pop("minLength", None)
        node.pop("maxLength", None)
        properties = node.get("properties")
        if node.get("type") == "object" or isinstance(properties, dict):
            node.setdefault("additionalProperties", False)
            if isinstance(properties, dict):
                node["required"] = list(properties)
        for key in ("properties", "$defs", "definitions"):
            if isinstance(node.get(key), dict):
                for child in node[key].values():
                    visit(child)
        for key in ("items", "prefixItems", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
            if key in node:
                visit(node[key])

    visit(result)
    return result


def _close_on_loop(loop: asyncio.AbstractEventLoop, client: Any) -> None:
    """Close ``client`` on the loop it was opened on, from whatever thread we are in."""
    if loop.is_closed():
        return  # nothing can run there any more; the session went with its loop
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    try:
        if current is loop:  # unload() called from inside that loop: cannot wait, so schedule it
            loop.create_task(client.close())
        elif loop.is_running():  # another thread's loop (the sync facade's, or the caller's)
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        else:
            loop.run_until_complete(client.close())
    except (RuntimeError, concurrent.futures.TimeoutError) as error:
        logger.debug("could not close an OpenAI client: %s", error)
