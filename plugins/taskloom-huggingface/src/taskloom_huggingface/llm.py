"""``HuggingFaceLLM``: chat completions through ``huggingface_hub.AsyncInferenceClient``.

One class covers the three ways Hugging Face serves a chat model:

* **Inference Providers**: ``model="<hub model id>"`` (optionally ``provider="together"`` and so on);
  requests go through the Hugging Face router with an ``hf_...`` token.
* **Inference Endpoints / TGI / any OpenAI-compatible server**: ``base_url="https://..."``. The
  client appends ``/v1/chat/completions`` to a server root (or ``/chat/completions`` to a URL that
  already ends in ``/v1``), so either form works.

The SDK is imported only in :meth:`HuggingFaceLLM.load` and the request path, so listing plugins
never imports ``huggingface_hub``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, model_validator

from taskloom import AsyncLLM
from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    GenerationError,
    RequestTimeoutError,
    RetryableError,
    ServerError,
)
from taskloom.llms.http import error_for_status
from taskloom.typing import ChatType, GenerateOutput

if TYPE_CHECKING:
    from huggingface_hub import AsyncInferenceClient

ENV_VAR = "HF_TOKEN"
NO_KEY = "none"
"""``api_key`` value meaning "this server needs no key" (only with ``base_url``)."""


def _key_from_env() -> SecretStr | None:
    value = os.environ.get(ENV_VAR)
    return SecretStr(value) if value else None


def _schema_of(structured_output: dict[str, Any] | type[BaseModel]) -> tuple[str, dict[str, Any]]:
    if isinstance(structured_output, type) and issubclass(structured_output, BaseModel):
        return structured_output.__name__, structured_output.model_json_schema()
    if isinstance(structured_output, dict):
        return str(structured_output.get("title") or "output"), structured_output
    raise TypeError("structured_output must be a JSON schema (dict) or a pydantic model class.")


def response_format_for(
    structured_output: dict[str, Any] | type[BaseModel], *, self_hosted: bool = False
) -> dict[str, Any]:
    """The ``response_format`` to hand ``chat_completion`` for a JSON schema or a pydantic model.

    For Inference Providers (a model id) it is the OpenAI-style ``json_schema`` shape that
    ``huggingface_hub`` takes as input and rewrites for each provider.

    For a ``base_url`` server the client would rewrite that shape to TGI's
    ``{"type": "json_object", "value": <schema>}``, which llama.cpp's server reads as "any JSON
    object" (it looks for the schema under ``schema``). So there the TGI shape is sent directly with
    the schema under both keys: TGI reads ``value``, llama.cpp reads ``schema``, and a
    ``json_object`` format is passed through by the client unchanged.
    """
    name, schema = _schema_of(structured_output)
    if self_hosted:
        return {"type": "json_object", "value": schema, "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _severity(error: BaseException) -> int:
    """Order for picking one error among a chat's generations: what stops the run comes first."""
    if not isinstance(error, GenerationError):
        return 0  # authentication, cancellation, a bug: stops the batch
    if not isinstance(error, RetryableError):
        return 1  # bad request: retrying cannot help
    return 2


_PARSERS = frozenset({"parse_obj", "parse_obj_as_instance", "parse_obj_as_list"})


def _raised_while_parsing(error: BaseException) -> bool:
    """Whether the SDK raised ``error`` while reading a response body into its output type.

    The client raises plain ``ValueError`` / ``TypeError`` both for a request it refuses to build
    (a config problem, not worth retrying) and for a body it cannot read (the server's fault);
    only the frames tell them apart.
    """
    if not isinstance(error, ValueError | TypeError):
        return False
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name in _PARSERS:
            return True
        tb = tb.tb_next
    return False


class _Clients(dict["asyncio.AbstractEventLoop", "AsyncInferenceClient"]):
    """One client per event loop; a copied or pickled LLM starts with none (loops do not copy)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Clients:
        return _Clients()

    def __reduce__(self) -> tuple[type[_Clients], tuple[()]]:
        return (_Clients, ())


class HuggingFaceLLM(AsyncLLM):
    """Chat models on Hugging Face Inference Providers, Inference Endpoints or a TGI server."""

    registry_name: ClassVar[str | None] = "huggingface"

    model: str | None = Field(
        default=None,
        description=(
            "Hub model id, e.g. 'meta-llama/Llama-3.1-8B-Instruct' (Inference Providers). With base_url it is "
            "only sent as the request's 'model'."
        ),
    )
    base_url: str | None = Field(
        default=None,
        description="URL of an Inference Endpoint, a TGI server or another OpenAI-compatible server (root or /v1).",
    )
    provider: str | None = Field(
        default=None,
        description="Inference Provider for a model id ('together', 'fireworks-ai', 'auto'...); default: HF routing.",
    )
    api_key: SecretStr | None = Field(
        default_factory=_key_from_env,
        description=f"Hugging Face token; defaults to ${ENV_VAR}. 'none' for a base_url server without auth.",
    )
    timeout: float = Field(default=120.0, gt=0, description="Seconds to wait for one response.")

    # One client per event loop: the client's HTTP pool belongs to the loop it first ran on.
    _clients: _Clients = PrivateAttr(default_factory=_Clients)
    _loaded: bool = PrivateAttr(default=False)
    _pending_closes: set[asyncio.Task[None]] = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _check_target(self) -> HuggingFaceLLM:
        if not self.model and not self.base_url:
            raise ValueError("HuggingFaceLLM needs a model id (model=...) or an endpoint URL (base_url=...).")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://.")
        if self.base_url and self.provider:
            raise ValueError("provider applies to a Hub model id only; leave it out when base_url is set.")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.base_url or ""

    # -- lifecycle -----------------------------------------------------------------------------

    def _token(self) -> str:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if not key:
            hint = f" or api_key='{NO_KEY}' for a server that needs none" if self.base_url else ""
            raise AuthenticationError(
                f"HuggingFaceLLM needs a Hugging Face token: set the {ENV_VAR} environment variable, "
                f"or pass api_key=...{hint}."
            )
        if not self.base_url and self.provider in (None, "auto") and not key.startswith("hf_"):
            raise AuthenticationError(
                "Without provider=..., requests go through the Hugging Face router, which needs a Hugging Face "
                f"token (hf_...): set {ENV_VAR} or pass api_key=...; for a provider's own key, also pass provider=..."
            )
        if key.lower() == NO_KEY and not self.base_url:
            raise AuthenticationError(
                f"api_key='{NO_KEY}' is only for a base_url server without auth; Hugging Face needs a token "
                f"(set {ENV_VAR} or pass api_key=...)."
            )
        return key

    def load(self) -> None:
        self._token()  # a missing key fails here, not at the first request
        import huggingface_hub  # noqa: F401  (fails here if the SDK is missing or broken)

        if self.provider not in (None, "auto"):
            known: list[str] | None
            try:
                from huggingface_hub.inference._providers import PROVIDERS

                known = sorted(PROVIDERS)
            except ImportError:  # pragma: no cover - another SDK layout: let the client judge
                known = None
            if known is not None and self.provider not in known:
                raise ValueError(f"Unknown Inference Provider {self.provider!r}; known: 'auto', {', '.join(known)}.")
        self._loaded = True

    def _client(self) -> AsyncInferenceClient:
        """The client for the running loop, created on first use there (creation makes no request)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for gone in [old for old in self._clients if old.is_closed()]:
                del self._clients[gone]  # its loop ended (asyncio.run returned): nothing left to close
            from huggingface_hub import AsyncInferenceClient

            token = self._token()
            if self.base_url:
                client = AsyncInferenceClient(base_url=self.base_url, api_key=token, timeout=self.timeout)
            else:
                client = AsyncInferenceClient(
                    model=self.model, provider=self.provider, api_key=token, timeout=self.timeout  # type: ignore[arg-type]
                )
            self._clients[loop] = client
        return client

    def unload(self) -> None:
        clients, self._clients = self._clients, _Clients()
        for loop, client in clients.items():
            self._close_on(loop, client)
        self._loaded = False
        super().unload()

    async def aclose(self) -> None:
        """Close the client opened on the running loop (the pipeline calls this before its loop ends)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _close_on(self, loop: asyncio.AbstractEventLoop, client: AsyncInferenceClient) -> None:
        """Close ``client`` on the loop it was used on, from whichever thread calls unload()."""
        if loop.is_closed():
            return
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is loop:  # unload() called from async code on that loop: close in the background
            task = loop.create_task(client.close())
            self._pending_closes.add(task)
            task.add_done_callback(self._pending_closes.discard)
        elif loop.is_running():  # the sync facade's loop (or another thread's): close there and wait
            future = asyncio.run_coroutine_threadsafe(client.close(), loop)
            try:
                future.result(timeout=10)
            except Exception:  # closing is best effort
                future.cancel()
        else:
            loop.run_until_complete(client.close())

    # -- generation ----------------------------------------------------------------------------

    async def agenerate(
        self,
        input: ChatType,
        num_generations: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_new_tokens: int | None = 512,
        stop: list[str] | None = None,
        seed: int | None = None,
        structured_output: dict[str, Any] | type[BaseModel] | None = None,
    ) -> GenerateOutput:
        """Ask for ``num_generations`` answers to one chat, one request each, all in flight at once.

        Args:
            temperature: Sampling temperature; 0 is greedy. None leaves the server's default.
            top_p: Nucleus sampling: keep the smallest token set whose probability reaches top_p.
            max_new_tokens: Longest answer, in tokens (sent as max_tokens).
            stop: Strings that end the answer when generated.
            seed: Sampling seed; generation i of an input uses seed + i, so they differ but repeat.
            structured_output: A JSON schema (dict) or a pydantic model class the answer must follow.
        """
        if not self._loaded:
            self.load()
        client = self._client()
        response_format = (
            None
            if structured_output is None
            else response_format_for(structured_output, self_hosted=self.base_url is not None)
        )
        options: dict[str, Any] = {
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stop": stop,
            "response_format": response_format,
        }
        if self.model and self.base_url:
            options["model"] = self.model  # the payload's model; the URL stays base_url

        async def one(index: int) -> tuple[str | None, int, int]:
            call_seed = None if seed is None else seed + index
            mapped: Exception | None = None
            try:
                response = await client.chat_completion(messages=input, seed=call_seed, **options)  # type: ignore[arg-type]
            except Exception as error:
                mapped = self._classify(error)
                if mapped is error:
                    raise
            if mapped is not None:
                # Raised outside the except block, so neither __cause__ nor __context__ holds the
                # SDK's exception (it carries the request, headers included).
                raise mapped
            return self._read(response)

        # Every generation is awaited (none is left to fail unobserved); the most serious error wins.
        results = await asyncio.gather(*(one(i) for i in range(num_generations)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise min(errors, key=_severity)
        answers = [r for r in results if not isinstance(r, BaseException)]
        return {
            "generations": [text for text, _, _ in answers],
            "statistics": {
                "input_tokens": [n for _, n, _ in answers],
                "output_tokens": [n for _, _, n in answers],
            },
        }

    def _read(self, response: Any) -> tuple[str | None, int, int]:
        """Text and token counts of one chat completion; a response without choices is malformed."""
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise ServerError(f"{self.model_name} answered without any choices (a malformed response).")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) or 0
        completion_tokens = getattr(usage, "completion_tokens", None) or 0
        return (text if isinstance(text, str) else None), int(prompt_tokens), int(completion_tokens)

    # -- errors --------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        if key and key.lower() != NO_KEY:
            text = text.replace(key, "***")
        return text

    def _classify(self, error: Exception) -> Exception:
        """Map an exception from ``chat_completion`` to core's error classes."""
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        where = self.model_name
        detail = self._redact(" ".join(str(error).split()))[:2000]
        if isinstance(error, GenerationError):
            return error
        if isinstance(error, InferenceTimeoutError | httpx2.TimeoutException | asyncio.TimeoutError):
            return RequestTimeoutError(f"{where}: no answer within {self.timeout:g} s.")
        if isinstance(error, HfHubHTTPError):
            response = error.response
            status = response.status_code if response is not None else None
            headers = response.headers if response is not None else None
            message = f"{where} answered HTTP {status}: {detail}"
            if status is None:
                return ServerError(message)
            return error_for_status(status, message, headers)
        if isinstance(error, json.JSONDecodeError) or _raised_while_parsing(error):
            return ServerError(f"{where} sent a response that is not a chat completion (malformed body): {detail}")
        if isinstance(error, httpx2.TransportError):
            return ServerError(f"could not talk to {where}: {type(error).__name__}: {detail}")
        if isinstance(error, ValueError | TypeError):
            # The client refused the request before sending it (unknown provider for a model...).
            return BadRequestError(f"{where}: {type(error).__name__}: {detail}")
        return error
