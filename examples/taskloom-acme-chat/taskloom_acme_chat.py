"""taskloom-acme-chat: a provider for Acme's chat API (any OpenAI-like server), in one file."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from taskloom.plugin import HTTPLLM, ChatType, GenerationOptions, LLMRegister, Reply, hookimpl


class AcmeLLM(HTTPLLM):
    """Chat models behind Acme's API, or any server that speaks OpenAI's chat completions."""

    registry_name = "acme-chat"
    api_key_env = "ACME_API_KEY"
    default_base_url = "https://api.acme.example/v1"
    path = "/chat/completions"

    class Options(GenerationOptions):
        temperature: float | None = Field(default=None, ge=0, le=2, description="Sampling temperature.")
        max_new_tokens: int | None = Field(default=256, ge=1, description="Most tokens per answer.")
        presence_penalty: float | None = Field(default=None, ge=-2, le=2, description="Acme's own option.")

    model: str = Field(description="Model id, e.g. 'acme-small'.")

    @property
    def model_name(self) -> str:
        return self.model

    def body(self, input: ChatType, options: Any, n: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": input, "max_tokens": options.max_new_tokens}
        for name in ("temperature", "top_p", "stop", "seed", "presence_penalty"):
            if getattr(options, name) is not None:
                body[name] = getattr(options, name)
        if options.structured_output is not None:
            schema = {"name": "answer", "schema": options.structured_output}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        return body

    def parse(self, body: Any, options: Any) -> Reply:
        usage = body.get("usage") or {}
        return Reply(
            texts=[choice["message"]["content"] for choice in body["choices"]],
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
        )


@hookimpl
def register_llms(register: LLMRegister) -> None:
    register(AcmeLLM)
