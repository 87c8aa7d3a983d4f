"""AnthropicLLM: Claude models through the Messages API, or any server that speaks it (llama.cpp).

The Messages API is one JSON POST, so core's :class:`~taskloom.plugin.HTTPLLM` sends it: key
lookup, sessions, status codes (529 included), retries, redaction and partial failures are all
the base's. What is left here is Anthropic's own: the request body (system messages apart, a
required ``max_tokens``, structured output as a forced tool call), the reading of content blocks
and usage, and the ``x-api-key`` header. The opt-in Message Batches mode (``batch_api``) keeps its
fields here and its submit/poll/collect cycle in :mod:`taskloom_anthropic.batches`.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, ClassVar, cast

from pydantic import Field, PrivateAttr

from taskloom.plugin import (
    HTTPLLM,
    ChatType,
    ContentPart,
    GenerateOutput,
    GenerationOptions,
    ImagePart,
    OutputSchema,
    Reply,
    RuntimeParameter,
    TextPart,
    chat_messages,
    image_data,
    text_of,
    tool_calls_text,
)
from taskloom_anthropic.batches import MAX_REQUESTS, BatchMismatchError, run_batch

logger = logging.getLogger("taskloom.anthropic")

API_KEY_ENV = "ANTHROPIC_API_KEY"
API_VERSION = "2023-06-01"
DEFAULT_MAX_NEW_TOKENS = 1024
_DEFAULT_TOOL_NAME = "structured_output"
_WRAPPED_KEY = "value"

# The tool of the call being answered. A response does not echo the tool it was forced through,
# and ``parse`` sees only the response, so ``acomplete`` leaves it here for the requests it makes.


class AnthropicLLM(HTTPLLM):
    """Claude models through Anthropic's Messages API, or any server that speaks it (llama.cpp...)."""

    registry_name: ClassVar[str | None] = "anthropic"
    api_key_env: ClassVar[str | None] = API_KEY_ENV
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    path: ClassVar[str] = "/v1/messages"
    # Anthropic counts max_tokens against the output-tokens limit when a request starts and corrects
    # it to the tokens generated when it ends.
    tokens_charged_at_request: ClassVar[bool] = False

    class Options(GenerationOptions):
        temperature: float | None = Field(
            default=None, ge=0, le=1, description="Sampling temperature, 0 to 1; sent only when set."
        )
        top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass; sent only when set.")
        top_k: int | None = Field(
            default=None, ge=1, description="Sample from the k most likely tokens only (Anthropic's own option)."
        )
        max_new_tokens: int | None = Field(
            default=DEFAULT_MAX_NEW_TOKENS,
            ge=1,
            description=f"Most tokens per answer (the API's required max_tokens); None means {DEFAULT_MAX_NEW_TOKENS}.",
        )
        seed: int | None = Field(
            default=None,
            description="The Messages API has no seed: accepted so configs port, ignored with one warning.",
        )
        structured_output: OutputSchema | None = Field(
            default=None,
            description="A JSON schema (or pydantic model) for the answer, sent as a forced tool call's input schema.",
        )
        tools: list[dict[str, Any]] | None = Field(
            default=None,
            description="Functions the model may call, as OpenAI tool specs ({'type': 'function', 'function': "
            "{'name', 'description', 'parameters'}}, sent as Anthropic's {'name', 'description', 'input_schema'}) "
            "or already in Anthropic's shape; a reply that calls them comes back as JSON text, "
            '{"tool_calls": [{"id", "name", "arguments"}]}.',
        )
        tool_choice: str | dict[str, Any] | None = Field(
            default=None,
            description="With tools: 'auto', 'required' (Anthropic's 'any'), the value that forbids calls, "
            "a tool's name to force it, or Anthropic's own {'type': ...} object; None: the API's default ('auto').",
        )

    model: str = Field(description="Model id, for example 'claude-sonnet-4-5'.")
    base_url: str | None = Field(
        default=None,
        description="Server root without /v1, e.g. 'http://127.0.0.1:8080' for llama-server; None for Anthropic's.",
    )
    batch_api: bool = Field(
        default=False,
        description="Send each generate() call (and a task's process) as one Message Batch (half price, "
        "done within 24 h) instead of live requests.",
    )
    batch_id: RuntimeParameter[str | None] = Field(
        default=None,
        description="With batch_api: collect this submitted batch instead of submitting a new one. Set on "
        "submission (so a dump taken while the batch runs resumes it) and cleared once collected.",
    )
    batch_poll_interval: float = Field(default=30.0, gt=0, description="Seconds between two batch status checks.")

    _warned_seed: bool = PrivateAttr(default=False)

    @property
    def model_name(self) -> str:
        return self.model

    def in_batch_mode(self) -> bool:
        return self.batch_api

    max_batch_requests: ClassVar[int] = MAX_REQUESTS

    def batch_requests(self, num_generations: int) -> int:
        return num_generations  # one request per generation: the Messages API has no n

    def reads_images(self) -> bool:
        """Image parts go as ``image`` blocks (base64, or a URL source), as the Messages API documents."""
        return True

    def headers(self, key: str) -> dict[str, str]:
        # Anthropic authenticates with its own header, not a Bearer token, and wants the version pinned.
        return {"x-api-key": key, "anthropic-version": API_VERSION}

    def error_detail(self, body: Any) -> str | None:
        """``{"type": "error", "error": {"type": ..., "message": ...}}``: the type tells a 400's cause apart."""
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("type") and error.get("message"):
            return f"{error['type']}: {error['message']}"
        return super().error_detail(body)

    def body(self, input: ChatType, options: GenerationOptions, n: int) -> dict[str, Any]:
        if options.seed is not None and not self._warned_seed:
            self._warned_seed = True
            logger.warning(
                "%s: the Anthropic Messages API has no seed; seed=%r is ignored and answers are not reproducible.",
                self.model,
                options.seed,
            )
        chat = chat_messages(input, self)
        system = [text_of(m["content"]) for m in chat if m["role"] == "system"]
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": m["role"], "content": content_blocks(m["content"])} for m in chat if m["role"] != "system"
            ],
            "max_tokens": options.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        }
        if system:
            body["system"] = "\n\n".join(system)
        for name in ("temperature", "top_p", "top_k"):
            if getattr(options, name) is not None:
                body[name] = getattr(options, name)
        if options.stop:
            body["stop_sequences"] = list(options.stop)
        tools = getattr(options, "tools", None)
        if tools:
            body["tools"] = [anthropic_tool(spec) for spec in tools]
            choice = getattr(options, "tool_choice", None)
            if choice is not None:
                body["tool_choice"] = anthropic_tool_choice(choice)
        tool = _tool_for(options)
        if tool is not None:  # a structured answer: its tool is forced, beside any the caller offers
            body["tools"] = [*body.get("tools", []), tool.definition]
            body["tool_choice"] = {"type": "tool", "name": tool.name}
        return body

    def parse(self, body: Any, options: GenerationOptions) -> Reply:
        content = _blocks(body["content"])
        tool = _tool_for(options)
        text: str | None = None
        if tool is not None:
            for block in content:
                if block["type"] == "tool_use" and block["name"] == tool.name:
                    text = tool.answer(block["input"])
                    break
        if text is None:  # no tool asked for, or the server answered in prose anyway (llama.cpp)
            parts = [block["text"] for block in content if block["type"] == "text"]
            text = "".join(parts) if parts else None
            calls = [block for block in content if block["type"] == "tool_use"]
            if calls and getattr(options, "tools", None):
                text = tool_calls_text(((b.get("id"), b.get("name"), b.get("input")) for b in calls), text)
        usage = _object(body["usage"])
        # Prompt tokens read from or written to the prompt cache are counted apart from input_tokens.
        prompt = sum(
            int(usage.get(name) or 0)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        return Reply(
            texts=[text],
            input_tokens=prompt,
            output_tokens=int(usage["output_tokens"]),
            cached_input_tokens=int(usage.get("cache_read_input_tokens") or 0) or None,
        )

    async def acomplete_batch(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        """Live requests, or, with ``batch_api``, every generation of every input as one Message Batch.

        One batch per call, not per input: a batch is followed by one id, so the single
        ``batch_id`` a dump keeps can resume the whole call.
        """
        if not self.batch_api:
            return await super().acomplete_batch(inputs, num_generations, options)
        return await run_batch(self, inputs, num_generations, options)


def content_blocks(content: str | list[ContentPart]) -> Any:
    """A message's content as Messages API blocks: text as it is, an image as an ``image`` block.

    A local file (a ``file://`` reference) or a ``data:`` URI becomes a ``base64`` source, the file
    read only now; an ``http(s)://`` URL becomes a ``url`` source, which Anthropic fetches itself.
    A block of another type is taken to be in Anthropic's shape already and passed on.
    """
    if not isinstance(content, list):
        return content
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": cast(TextPart, part)["text"]})
        elif part["type"] == "image_url":
            image = image_data(cast(ImagePart, part)["image_url"]["url"])
            source = (
                {"type": "url", "url": image.url}
                if image.url is not None
                else {"type": "base64", "media_type": image.media_type, "data": image.data}
            )
            blocks.append({"type": "image", "source": source})
        else:
            blocks.append(dict(part))
    return blocks


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object; a TypeError (a malformed answer, retried) otherwise."""
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _blocks(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise TypeError(f"content is a {type(value).__name__}, not a list of blocks")
    return [_object(block) for block in value]


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
    def from_schema(cls, schema: dict[str, Any]) -> _Tool:
        title = schema.get("title")
        # Tool names must match ^[A-Za-z0-9_-]{1,64}$.
        name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64] if isinstance(title, str) and title else _DEFAULT_TOOL_NAME
        if schema.get("type") == "object":
            return cls(name, schema, wrapped=False)
        # Tool input must be an object: anything else becomes the one property of one, and the
        # definitions it refers to (#/$defs/...) move to the new root so the references still resolve.
        inner = {k: v for k, v in schema.items() if k != "$defs"}
        wrapper: dict[str, Any] = {"type": "object", "properties": {_WRAPPED_KEY: inner}, "required": [_WRAPPED_KEY]}
        if "$defs" in schema:
            wrapper["$defs"] = schema["$defs"]
        return cls(name, wrapper, wrapped=True)

    def answer(self, arguments: Any) -> str:
        if self.wrapped and isinstance(arguments, dict) and _WRAPPED_KEY in arguments:
            arguments = arguments[_WRAPPED_KEY]
        return json.dumps(arguments, ensure_ascii=False)


__all__ = ["API_KEY_ENV", "API_VERSION", "DEFAULT_MAX_NEW_TOKENS", "AnthropicLLM", "BatchMismatchError"]


def anthropic_tool(spec: dict[str, Any]) -> dict[str, Any]:
    """One tool as the Messages API takes it: an OpenAI spec converted, Anthropic's own shape as given.

    Callers describe tools once, in OpenAI's shape (what datasets and TRL use), whatever provider runs.
    """
    function = spec.get("function") if spec.get("type") == "function" else None
    if not isinstance(function, dict):
        return spec
    tool: dict[str, Any] = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        tool["description"] = function["description"]
    return tool


def anthropic_tool_choice(choice: str | dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``tool_choice`` values in Anthropic's shape; Anthropic's own objects pass through."""
    if isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else None
        return {"type": "tool", "name": function["name"]} if isinstance(function, dict) else choice
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice in ("required", "any"):
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _tool_for(options: GenerationOptions) -> _Tool | None:
    """The forced tool a structured answer goes through, if the request asks for one."""
    schema = options.structured_output
    return _Tool.from_schema(schema) if schema is not None else None
