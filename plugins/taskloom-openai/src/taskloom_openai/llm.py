"""OpenAILLM: chat completions from OpenAI or any server that speaks its API.

Live requests go through core's :class:`~taskloom.plugin.HTTPLLM` (key lookup, one aiohttp
session per loop, status codes, retries, redaction, the partial-failure rule); this module says
only what OpenAI's API adds: the request body, the response shape, ``n``, the two names of the
token limit, strict JSON schemas, and the Batch API, whose file upload and job polling are not
chat completions and go through the openai SDK.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from pydantic import Field

from taskloom.plugin import (
    HTTPLLM,
    Chat,
    ChatType,
    GenerateOutput,
    GenerationError,
    GenerationOptions,
    OutputSchema,
    Reply,
    RequestTimeoutError,
    RuntimeParameter,
    ServerError,
    TaskloomError,
    error_for_status,
    failed_output,
    inline_images,
    split_evenly,
    tool_calls_text,
)

if TYPE_CHECKING:
    import openai

logger = logging.getLogger("taskloom.openai")

T = TypeVar("T")

MAX_CHOICES = 128
"""The most choices OpenAI gives for one request (its documented limit on ``n``)."""
BATCH_ENDPOINT: Final = "/v1/chat/completions"
"""Batch API lines name the endpoint from the host's root, whatever ``base_url`` is."""


class BatchMismatchError(TaskloomError, ValueError):
    """A ``batch_id`` to resume that was submitted for other requests than the ones given."""


class OpenAILLM(HTTPLLM):
    """Chat models from OpenAI, or from any OpenAI-compatible server through ``base_url``.

    Works with vLLM, llama.cpp's ``llama-server``, Ollama, TGI, Together, Groq and the like:
    point ``base_url`` at the server's ``/v1`` root. A local server that checks no key still
    needs a non-empty one, for example ``api_key="none"``.
    """

    registry_name = "openai"
    api_key_env = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"
    base_url_env = "OPENAI_BASE_URL"
    path = "/chat/completions"

    class Options(GenerationOptions):
        temperature: float | None = Field(
            default=None, ge=0, le=2, description="Sampling temperature, 0 (greedy) to 2; None: the server's default."
        )
        max_new_tokens: int | None = Field(
            default=512,
            ge=1,
            description="Most tokens per answer, sent as max_tokens or max_completion_tokens "
            "(see max_tokens_parameter); None for no limit.",
        )
        stop: list[str] | None = Field(default=None, description="Sequences that end an answer (OpenAI takes up to 4).")
        structured_output: OutputSchema | None = Field(
            default=None,
            description="A JSON schema (or pydantic model class) the answer must follow; sent as a strict "
            "json_schema response_format, with every object closed and all its properties required.",
        )
        frequency_penalty: float | None = Field(
            default=None,
            ge=-2,
            le=2,
            description="Penalises tokens by how often they already appear in the answer (-2 to 2).",
        )
        presence_penalty: float | None = Field(
            default=None,
            ge=-2,
            le=2,
            description="Penalises tokens that already appear in the answer at all, for new topics (-2 to 2).",
        )
        tools: list[dict[str, Any]] | None = Field(
            default=None,
            description="Functions the model may call, as OpenAI tool specs ({'type': 'function', 'function': "
            "{'name', 'description', 'parameters'}}); a reply that calls them comes back as JSON text, "
            '{"tool_calls": [{"id", "name", "arguments"}]} (see tool_calls_text).',
        )
        tool_choice: str | dict[str, Any] | None = Field(
            default=None,
            description="With tools: 'auto', 'required' (or OpenAI's value that forbids calls), or "
            "{'type': 'function', 'function': {'name': ...}} to force one; None: the server's default ('auto').",
        )

    model: str = Field(description="Model id, for example 'gpt-4o-mini', or the name a local server serves.")
    base_url: str | None = Field(
        default=None,
        description="API root of an OpenAI-compatible server (e.g. 'http://127.0.0.1:8080/v1'); "
        "None: $OPENAI_BASE_URL, else OpenAI itself.",
    )
    # Reasoning models can think for minutes before the first token: longer than the base's default.
    timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for one request's answer.")
    supports_n: bool = Field(
        default=True,
        description="The server honours `n` (several choices per request); if False, num_generations "
        "is served by concurrent requests of one choice each.",
    )
    max_tokens_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        default="auto",
        description="Request field that carries max_new_tokens. 'auto': 'max_completion_tokens' for "
        "OpenAI itself (its reasoning models refuse 'max_tokens'), 'max_tokens' with a base_url or "
        "$OPENAI_BASE_URL (what every compatible server understands).",
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
    native_tools: bool = Field(
        default=True,
        description="The model answers the tools option with tool calls; False for a server whose model does "
        "not (a small model behind llama-server), so tasks put the tools in the prompt and ask for JSON instead.",
    )
    batch_poll_interval: float = Field(default=30.0, gt=0, description="Seconds between two batch status checks.")

    @property
    def model_name(self) -> str:
        return self.model

    def in_batch_mode(self) -> bool:
        return self.batch_api

    def load(self) -> None:
        super().load()
        if self.batch_api:
            import openai  # noqa: F401  (fail here, not at the first batch, if it is missing)

    # -- one live request ----------------------------------------------------------------------

    def choices_per_request(self) -> int:
        return MAX_CHOICES if self.supports_n else 1

    def max_tokens_field(self) -> str:
        """OpenAI's reasoning models refuse ``max_tokens``; most other servers know only it."""
        if self.max_tokens_parameter != "auto":
            return self.max_tokens_parameter
        # ``base_url`` first: api_root() reads the environment, on every request.
        openai_itself = not self.base_url and self.api_root() == self.default_base_url
        return "max_completion_tokens" if openai_itself else "max_tokens"

    def calls_tools(self) -> bool:
        return self.native_tools

    def render_chat(self, messages: Chat) -> str | None:
        """The model's template as llama.cpp's server renders it (``/apply-template``); None for
        servers without that endpoint (vLLM, OpenAI)."""
        return self.template_from_server(messages)

    def completes_raw_text(self) -> bool:
        """Raw text goes to ``/completions``, which vLLM, llama.cpp's server and OpenAI's instruct
        models offer (a server without it answers 404, recorded on the row); not in batch mode,
        whose jobs are chat completions."""
        return not self.batch_api

    def path_for(self, input: ChatType) -> str:
        return "/completions" if isinstance(input, str) else self.path

    def reads_images(self) -> bool:
        """Image parts go as OpenAI documents them (a local file as a data URI); a model or a
        compatible server that sees none answers 400, recorded on the row."""
        return True

    def body(self, input: ChatType, options: OpenAILLM.Options, n: int) -> dict[str, Any]:
        raw = isinstance(input, str)
        # A local image is sent inline, read only now; the chat the row and cache keep names its file.
        body: dict[str, Any] = {
            "model": self.model,
            "prompt" if raw else "messages": input if isinstance(input, str) else inline_images(input),
        }
        if n > 1:
            body["n"] = n
        if options.max_new_tokens is not None:
            # The legacy /completions endpoint knows only max_tokens.
            body["max_tokens" if raw else self.max_tokens_field()] = options.max_new_tokens
        for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            value = getattr(options, name)
            if value is not None:
                body[name] = value
        if options.stop:
            body["stop"] = list(options.stop)
        if options.structured_output is not None:
            body["response_format"] = response_format(options.structured_output)
        if options.tools and not raw:
            body["tools"] = list(options.tools)
            if options.tool_choice is not None:
                body["tool_choice"] = options.tool_choice
        return body

    def parse(self, body: Any, options: Any) -> Reply:
        choices = body["choices"]
        if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
            raise TypeError("'choices' is not a list of objects")
        # Servers that batch choices internally may list them out of order; ``index`` is the truth.
        ordered = sorted(choices, key=lambda c: c["index"] if isinstance(c.get("index"), int) else 0)
        texts: list[str | None] = []
        for choice in ordered:
            message = choice.get("message")
            if message is None and "text" in choice:  # an answer from /completions (raw text)
                content = choice["text"]
            else:
                content = message.get("content") if isinstance(message, dict) else None
                calls = message.get("tool_calls") if isinstance(message, dict) else None
                if isinstance(calls, list) and calls:
                    content = tool_calls_text(_openai_calls(calls), content)
            texts.append(content if isinstance(content, str) else None)  # None: a refusal
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Reply(
            texts,
            prompt if isinstance(prompt, int) else None,
            completion if isinstance(completion, int) else None,
            cached if isinstance(cached, int) else None,
        )

    # -- the Batch API ---------------------------------------------------------------------------

    async def acomplete_batch(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        """Live requests, or, with ``batch_api``, all inputs as one Batch API job.

        The SDK client lives for this call only: a job takes minutes to hours, so a new client
        per call costs nothing, and one that is closed before the call returns can never outlive
        the event loop it was opened on.
        """
        if not self.batch_api:
            return await super().acomplete_batch(inputs, num_generations, options)
        if not inputs:
            return []
        import openai

        lines = [
            {
                "custom_id": f"request-{index}",
                "method": "POST",
                "url": BATCH_ENDPOINT,
                "body": self.body(chat, cast(OpenAILLM.Options, options), num_generations),
            }
            for index, chat in enumerate(inputs)
        ]
        payload = "\n".join(json.dumps(line, sort_keys=True) for line in lines).encode()
        digest = hashlib.sha256(payload).hexdigest()
        if self.loaded_key() is None:
            self.load()
        async with openai.AsyncOpenAI(
            api_key=self.loaded_key() or "none", base_url=self.api_root(), timeout=self.timeout, max_retries=0
        ) as client:
            batch_id = self.batch_id or await self._submit(client, payload, digest, len(lines))
            batch = await self._wait_for_batch(client, batch_id, digest)
            outputs = await self._collect_batch(client, batch, len(inputs), num_generations, options)
        self.batch_id = None  # collected: the next call submits a new job
        return outputs

    async def _submit(self, client: openai.AsyncOpenAI, payload: bytes, digest: str, count: int) -> str:
        uploaded = await self._sdk_call(
            lambda: client.files.create(file=("taskloom-batch.jsonl", payload, "application/jsonl"), purpose="batch")
        )
        batch = await self._sdk_call(
            lambda: client.batches.create(
                input_file_id=uploaded.id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata={"taskloom_requests_sha256": digest},
            )
        )
        self.batch_id = batch.id
        logger.warning(
            "Submitted OpenAI batch %s (%d requests); if this run stops, resume with batch_id=%r.",
            batch.id,
            count,
            batch.id,
        )
        return str(batch.id)

    async def _wait_for_batch(self, client: openai.AsyncOpenAI, batch_id: str, digest: str) -> Any:
        while True:
            batch = await self._sdk_call(lambda: client.batches.retrieve(batch_id))
            submitted_for = (getattr(batch, "metadata", None) or {}).get("taskloom_requests_sha256")
            if submitted_for and submitted_for != digest:
                raise BatchMismatchError(
                    f"OpenAI batch {batch_id} was submitted for other requests than these (different inputs, "
                    "model or generation options); unset batch_id to submit a new batch."
                )
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                return batch
            logger.info("OpenAI batch %s is %s: %s", batch_id, batch.status, getattr(batch, "request_counts", ""))
            await asyncio.sleep(self.batch_poll_interval)

    async def _collect_batch(
        self, client: openai.AsyncOpenAI, batch: Any, num_inputs: int, num_generations: int, options: Any
    ) -> list[GenerateOutput]:
        if batch.status == "failed":
            self.batch_id = None  # a failed job cannot be resumed; the next call submits again
            raise GenerationError(f"OpenAI batch {batch.id} failed: {self.redact(str(batch.errors))}")
        records: dict[str, Any] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._sdk_call(functools.partial(client.files.content, file_id))
            for line in content.text.splitlines():
                if line.strip():
                    record = json.loads(line)
                    records[record.get("custom_id")] = record
        return [
            self._batch_output(batch, records.get(f"request-{index}"), num_generations, options)
            for index in range(num_inputs)
        ]

    def _batch_output(self, batch: Any, record: Any, n: int, options: Any) -> GenerateOutput:
        """One input's result line as an output, by the same rules as a live request's."""
        if record is None:
            return failed_output(n, f"OpenAI batch {batch.id} ({batch.status}) has no result for this input")
        response = record.get("response") or {}
        body = response.get("body")
        if response.get("status_code") != 200 or not isinstance(body, dict):
            problem = record.get("error") or body or "no response"
            return failed_output(n, f"BadRequestError: {self.redact(json.dumps(problem))}")
        try:
            reply = self.parse(body, options)
        except (KeyError, TypeError, IndexError, ValueError) as error:
            detail = self.redact(f"{type(error).__name__}: {error}; {json.dumps(body)[:300]}")
            return failed_output(n, ServerError(f"OpenAI batch {batch.id} holds a malformed result: {detail}"))
        texts = reply.texts[:n]
        got = len(texts)
        if not got:
            return failed_output(n, ServerError(f"OpenAI batch {batch.id} holds a result without any answer"))
        missing = n - got
        output: GenerateOutput = {
            "generations": texts + [None] * missing,
            "statistics": {
                "input_tokens": split_evenly(reply.input_tokens or 0, got) + [0] * missing,
                "output_tokens": split_evenly(reply.output_tokens or 0, got) + [0] * missing,
            },
        }
        if missing:
            gap = f"ServerError: OpenAI batch {batch.id} gave {got} of {n} answers"
            output["errors"] = [None] * got + [gap] * missing
        return output

    async def _sdk_call(self, request: Callable[[], Awaitable[T]]) -> T:
        """One Files/Batch API call, its SDK errors as core's, the transient ones retried."""
        import openai

        async def attempt() -> T:
            try:
                return await request()
            except openai.OpenAIError as error:
                # Never chained: the SDK's exception may carry the key the server echoed back.
                raise self._sdk_error(error) from None
            except ValueError as error:  # a body that is not JSON
                raise ServerError(f"{self.where()} answered with a malformed body: {self.redact(str(error))}") from None

        return await self.retrying(attempt)

    def _sdk_error(self, error: openai.OpenAIError) -> Exception:
        import openai

        message = f"{self.where()}: {self.redact(str(error))}"
        if isinstance(error, openai.APITimeoutError):
            return RequestTimeoutError(f"{message} (no answer within {self.timeout:g} s)")
        if isinstance(error, openai.APIStatusError):
            hint = f"Check the key in {self.api_key_env} (or api_key=...)."
            return error_for_status(error.status_code, message, error.response.headers, auth_hint=hint)
        return ServerError(message)  # connection errors, bodies the SDK could not read


def _openai_calls(calls: list[Any]) -> list[tuple[Any, Any, Any]]:
    """OpenAI's ``tool_calls`` entries as (id, name, arguments); entries that are not function calls are left out."""
    found = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            found.append((call.get("id"), function.get("name"), function.get("arguments")))
    return found


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` for an answer that must be JSON valid for ``schema`` (strict mode)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "output"))[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_schema(schema), "strict": True}}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` with its objects closed, all their properties required, and no string lengths.

    Strict mode refuses a schema with an open object or an optional property, and rejects
    keywords it does not take: it documents ``pattern`` and ``format`` for strings, not
    ``minLength``/``maxLength``. Task schemas carry lengths to keep a small local model's grammar
    short; an API model needs neither.
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
