"""The built-in generation tasks: an instruction (or a whole chat) in, a generation out."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, model_validator

from taskloom.images import image_parts, referenced
from taskloom.llms.options import OutputSchema
from taskloom.steps import StepColumns
from taskloom.tasks.base import Task
from taskloom.templates import compile_template, template_variables
from taskloom.typing import ChatMessage, ChatType, ContentPart, Row


def _as_list(value: Any) -> Any:
    """One column may be named on its own (``columns="instruction"``), as distilabel allows."""
    return [value] if isinstance(value, str) else value


_ROLES = {"system", "user", "assistant", "developer", "tool"}


class TextGeneration(Task):
    """Generate a response to an instruction, optionally behind a system prompt.

    With ``template`` (Jinja2), the prompt is built from the row's ``columns`` instead of the
    ``instruction`` column alone. A row's own ``system_prompt`` column overrides the field.
    A row's optional ``image`` column (a path, a URL, bytes, or a list of them) makes the user
    message content parts, the images before the text (Anthropic documents that order as the one
    its models answer best; OpenAI's take either); see ``docs/images.md``.
    """

    registry_name: ClassVar[str | None] = "text-generation"
    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "What's the capital city of Spain? Answer in one sentence."},
        {"generation": "The capital city of Spain is Madrid."},
    )

    system_prompt: str | None = Field(default=None, description="System message sent before every prompt.")
    template: str | None = Field(
        default=None,
        description="Jinja2 template for the user message; its variables are row columns.",
    )
    columns: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["instruction"],
        description="Columns the template reads; inferred from the template when not given.",
    )

    @model_validator(mode="after")
    def _check_template(self) -> TextGeneration:
        if self.template is None:
            if len(self.columns) != 1:
                raise ValueError("columns names several columns: give a template that uses them.")
            return self
        variables = [v for v in template_variables(self.template) if v != "system_prompt"]
        if "columns" not in self.model_fields_set:
            self.__dict__["columns"] = variables
        unknown = sorted(set(variables) - set(self.columns))
        if unknown:
            raise ValueError(f"the template uses {unknown}, which are not in columns={self.columns}.")
        return self

    @property
    def inputs(self) -> StepColumns:
        return {**dict.fromkeys(self.columns, True), "system_prompt": False, "image": False}

    @property
    def outputs(self) -> StepColumns:
        return ["generation", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        if self.template is None:
            column = self.columns[0]
            content = input[column]
            if not isinstance(content, str):
                raise ValueError(
                    f"task {self.name!r}: column {column!r} must be a string, got {type(content).__name__}."
                )
        else:
            content = compile_template(self.template).render(input)
        image = input.get("image")
        if image is not None:  # most rows have none: the hot path skips the call
            images = image_parts(image)
            if images:
                parts: list[ContentPart] = [*images, {"type": "text", "text": content}]
                return self._chat(input, parts)
        return self._chat(input, content)

    def _chat(self, input: Row, content: str | list[ContentPart]) -> ChatType:
        system = input.get("system_prompt") or self.system_prompt
        if system:
            return [{"role": "system", "content": system}, {"role": "user", "content": content}]
        return [{"role": "user", "content": content}]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"generation": output}


def check_chat(messages: Any, where: str) -> ChatType:
    """Validate an OpenAI-style chat, saying exactly what is wrong with it."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: expected a non-empty list of chat messages, got {messages!r:.80}.")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"{where}: message {index} needs 'role' and 'content': {message!r:.80}")
        if message["role"] not in _ROLES:
            raise ValueError(f"{where}: message {index} has unknown role {message['role']!r}.")
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the last message must come from the user.")
    chat: list[ChatMessage] = messages
    return chat


class ChatGeneration(Task):
    """Continue a conversation: a chat of messages in, the assistant's next turn out."""

    registry_name: ClassVar[str | None] = "chat-generation"
    example: ClassVar[tuple[Row, Row] | None] = (
        {"messages": [{"role": "user", "content": "Hi! Can you help me plan a picnic?"}]},
        {"generation": "Of course! How many people, and where are you thinking of going?"},
    )

    @property
    def inputs(self) -> StepColumns:
        return ["messages"]

    @property
    def outputs(self) -> StepColumns:
        return ["generation", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return referenced(check_chat(input["messages"], f"task {self.name!r}, column 'messages'"))

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"generation": output}


class StructuredGeneration(TextGeneration):
    """Generate a JSON object that follows a schema; each of its properties becomes a column.

    The schema (a JSON schema, or a pydantic model class) is also given to the LLM as
    ``structured_output`` when it supports that, so a local model's grammar or a provider's JSON
    mode makes every answer parse; the answer is still checked here, and one that does not
    parse keeps its raw text.
    """

    registry_name: ClassVar[str | None] = "structured-generation"

    output_schema: OutputSchema = Field(
        description="JSON schema of the answer (an object); a pydantic model class is accepted too.",
    )

    @model_validator(mode="after")
    def _check_schema(self) -> StructuredGeneration:
        if not isinstance(self.output_schema.get("properties"), dict) or not self.output_schema["properties"]:
            raise ValueError("output_schema must be a JSON schema of an object with properties.")
        return self

    def llm_kwargs(self) -> dict[str, Any]:
        kwargs = super().llm_kwargs()
        if self.resolve_llm().accepts("structured_output"):
            kwargs.setdefault("structured_output", self.output_schema)
        return kwargs

    @property
    def outputs(self) -> StepColumns:
        return [*self.output_schema["properties"], "model_name"]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        import json

        text = (output or "").strip()
        start, end = text.find("{"), text.rfind("}")  # tolerate fences or prose around the object
        if start < 0 or end < start:
            raise ValueError("the answer holds no JSON object")
        parsed = json.loads(text[start : end + 1])
        if not isinstance(parsed, dict):
            raise ValueError("the answer is not a JSON object")
        missing = [key for key in self.output_schema.get("required", []) if key not in parsed]
        if missing:
            raise ValueError(f"the answer lacks {missing}")
        return {key: parsed.get(key) for key in self.output_schema["properties"]}
