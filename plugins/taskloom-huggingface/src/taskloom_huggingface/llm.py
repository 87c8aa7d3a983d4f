"""``HuggingFaceLLM``: chat completions on Hugging Face, posted by core's HTTP base.

One class covers the three ways Hugging Face serves a chat model, all OpenAI-compatible:

* **Inference Providers**: ``model="<hub model id>"``, optionally ``provider="together"``. Requests
  go to the router's ``https://router.huggingface.co/v1/chat/completions`` with the provider as a
  suffix of the model (``"meta-llama/Llama-3.1-8B-Instruct:together"``), as the router documents
  for OpenAI clients; the router needs an ``hf_...`` token.
* **Inference Endpoints / TGI / any OpenAI-compatible server**: ``base_url="https://..."``, its root
  or its ``/v1`` URL.

huggingface_hub's client is not used for chat: every provider behind the router speaks the same
OpenAI shape, so the base's one HTTP path (retries, status mapping, redaction) serves them all.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, SecretStr, model_validator

from taskloom.plugin import (
    HTTPLLM,
    AuthenticationError,
    ChatType,
    GenerationOptions,
    Reply,
    inline_images,
)

ROUTER = "https://router.huggingface.co/v1"
NO_KEY = "none"
"""``api_key`` value meaning "this server checks no key" (only with ``base_url``)."""
ANY_MODEL = "tgi"
"""The ``model`` sent to a server when none is given: TGI and llama.cpp serve one model and ignore
it, but some OpenAI-compatible servers refuse a request without the field."""

ROUTED_PROVIDERS = frozenset(
    {
        "baseten",
        "cerebras",
        "cohere",
        "deepinfra",
        "fal-ai",
        "featherless-ai",
        "fireworks-ai",
        "groq",
        "hf-inference",
        "novita",
        "nscale",
        "ovhcloud",
        "publicai",
        "replicate",
        "scaleway",
        "together",
        "wavespeed",
        "zai-org",
    }
)
"""huggingface_hub 2.4's providers, checked here without importing it (that costs half a second).
A name missing from this list is looked up in the installed huggingface_hub, which may be newer.
``openai`` is left out: huggingface_hub itself refuses to route it through Hugging Face."""


def response_format_for(schema: dict[str, Any], *, self_hosted: bool) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that follows ``schema``.

    The router takes OpenAI's ``json_schema`` shape and translates it per provider. A server is
    sent TGI's ``json_object`` shape, with the schema under both names it is read from: TGI reads
    ``value``, llama.cpp's server reads ``schema`` (and, given only ``value``, would accept any
    JSON object).
    """
    if self_hosted:
        return {"type": "json_object", "value": schema, "schema": schema}
    # OpenAI names the format with ^[A-Za-z0-9_-]{1,64}$; a schema's title may be any text.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or ""))[:64] or "output"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class HuggingFaceLLM(HTTPLLM):
    """Chat models on Hugging Face Inference Providers, Inference Endpoints or a TGI server."""

    registry_name: ClassVar[str | None] = "huggingface"
    api_key_env: ClassVar[str | None] = "HF_TOKEN"
    path: ClassVar[str] = "/chat/completions"

    class Options(GenerationOptions):
        max_new_tokens: int | None = Field(
            default=512, ge=1, description="Most tokens per answer (sent as max_tokens); None: the server's limit."
        )
        seed: int | None = Field(
            default=None,
            description="Sampling seed; generation i of an input uses seed + i, so its answers differ but repeat.",
        )

    model: str | None = Field(
        default=None,
        description=(
            "Hub model id, e.g. 'meta-llama/Llama-3.1-8B-Instruct' (Inference Providers). With base_url it is "
            "only sent as the request's 'model'."
        ),
    )
    base_url: str | None = Field(
        default=None,
        description=(
            "URL of an Inference Endpoint, a TGI server or another OpenAI-compatible server (its root or .../v1); "
            "None: Inference Providers, through the Hugging Face router."
        ),
    )
    provider: str | None = Field(
        default=None,
        description=(
            "Inference Provider for a model id ('together', 'fireworks-ai'...); None or 'auto': the router picks, "
            "following your settings at hf.co/settings/inference-providers."
        ),
    )
    api_key: SecretStr | None = Field(
        default=None,
        description=(
            "Hugging Face token (hf_...); defaults to $HF_TOKEN at load(). 'none' for a base_url server without "
            "auth (then no Authorization header is sent). Never dumped."
        ),
    )

    @model_validator(mode="after")
    def _check_target(self) -> HuggingFaceLLM:
        if not self.model and not self.base_url:
            raise ValueError("HuggingFaceLLM needs a model id (model=...) or an endpoint URL (base_url=...).")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}.")
        if self.base_url and self.provider:
            raise ValueError("provider applies to a Hub model id only; leave it out when base_url is set.")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.base_url or ""

    # -- where requests go, and with which key ------------------------------------------------------

    def api_root(self) -> str:
        """The router, or ``base_url`` as its ``/v1`` root, whichever form it was given in."""
        if not self.base_url:
            return ROUTER
        root = self.base_url.rstrip("/").removesuffix("/chat/completions")
        return root if root.endswith("/v1") else f"{root}/v1"

    def load(self) -> None:
        super().load()  # the key from api_key or $HF_TOKEN; a missing one fails here
        if self.base_url:
            return
        key = self.loaded_key() or ""
        if key.lower() == NO_KEY:
            raise AuthenticationError(
                f"api_key='{NO_KEY}' is only for a base_url server without auth; the Hugging Face router needs a "
                "token (hf_...): set HF_TOKEN or pass api_key=..."
            )
        if not key.startswith("hf_"):
            raise AuthenticationError(
                "The Hugging Face router needs a Hugging Face token (hf_...): set HF_TOKEN or pass api_key=... "
                "A provider's own key is added at hf.co/settings/inference-providers (the router then bills it), "
                "or use base_url with that provider's OpenAI-compatible URL."
            )
        self._check_provider()

    def _check_provider(self) -> None:
        """Refuse an unknown provider now, rather than a 4xx from the router on every row."""
        if self.provider in (None, "auto") or self.provider in ROUTED_PROVIDERS:
            return
        if self.provider == "openai":
            raise ValueError(
                "provider='openai' is not served through the Hugging Face router: use the 'openai' LLM instead."
            )
        known = set(ROUTED_PROVIDERS)
        try:
            from huggingface_hub.inference._providers import PROVIDERS
        except ImportError:  # another layout of the SDK: our list is all there is
            pass
        else:
            known |= set(PROVIDERS) - {"openai"}
        if self.provider not in known:
            raise ValueError(
                f"Unknown Inference Provider {self.provider!r}; known: 'auto', {', '.join(sorted(known))}."
            )

    def headers(self, key: str) -> dict[str, str]:
        return {} if key.lower() == NO_KEY else super().headers(key)

    def reads_images(self) -> bool:
        """The chat-completion API takes ``image_url`` parts (a URL or a base64 data URI) for
        image-text-to-text models; a text-only model answers 400, recorded on the row."""
        return True

    # -- the request and the answer -----------------------------------------------------------------

    def body(self, input: ChatType, options: HuggingFaceLLM.Options, n: int) -> dict[str, Any]:
        if self.base_url:
            model = self.model or ANY_MODEL
        elif self.provider in (None, "auto"):
            model = str(self.model)
        else:
            model = f"{self.model}:{self.provider}"
        # OpenAI's content parts, as the chat-completion API documents for VLMs; a local file inline.
        body: dict[str, Any] = {"model": model, "messages": input if isinstance(input, str) else inline_images(input)}
        if options.max_new_tokens is not None:
            body["max_tokens"] = options.max_new_tokens
        for name in ("temperature", "top_p", "stop", "seed"):
            if getattr(options, name) is not None:
                body[name] = getattr(options, name)
        if options.structured_output is not None:
            body["response_format"] = response_format_for(options.structured_output, self_hosted=bool(self.base_url))
        return body

    def parse(self, body: Any, options: Any) -> Reply:
        texts = [choice["message"]["content"] for choice in body["choices"]]  # a TypeError if body is no dict
        if not all(text is None or isinstance(text, str) for text in texts):
            raise ValueError("a message whose content is not text")
        usage = body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return Reply(texts, usage.get("prompt_tokens"), usage.get("completion_tokens"))
