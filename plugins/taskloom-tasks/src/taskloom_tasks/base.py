"""What every task of the pack shares: a Jinja2 prompt the user may replace, JSON when the LLM
can be held to a schema, and a prose reader for when it cannot.

A task names its template file (``templates/<name>.jinja2``) and builds the template's context
from a row; it gives the JSON schema of its answer, and two readers: one for the parsed JSON and
one for free text. ``format_output`` tries JSON first, then prose, and raises (so core keeps the
raw text) only when both fail.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from pydantic import Field, model_validator

from taskloom import Task
from taskloom.plugin import (
    Call,
    CallPlan,
    ChatType,
    GenerateOutput,
    Row,
    Statistics,
    compile_template,
    failed_output,
    template_variables,
    token_counts,
)
from taskloom_tasks.parsing import find_json, is_json_reply


@cache
def packaged_template(name: str) -> str:
    """The text of ``templates/<name>.jinja2`` shipped with this package."""
    return (resources.files("taskloom_tasks") / "templates" / f"{name}.jinja2").read_text(encoding="utf-8")


class PromptedTask(Task):
    """A task whose user message is a Jinja2 template rendered from the row.

    ``template`` replaces the packaged prompt; it sees the same variables (each task's docs list
    them), including ``json``: true when the answer is held to the task's JSON schema.
    """

    template_name: ClassVar[str]
    """The packaged template file, without ``.jinja2``."""
    default_system_prompt: ClassVar[str | None] = None
    counted_list: ClassVar[str | None] = None
    """A schema property with one entry per item the prompt shows (see ``row_schema``)."""

    template: str | None = Field(
        default=None,
        description="A Jinja2 template for the user message, replacing the task's own; it sees the same variables.",
    )

    def described_prompt(self) -> str | None:
        return self.template or packaged_template(self.template_name)

    system_prompt: str | None = Field(
        default=None, description="A system message; by default the task's own (if it has one)."
    )
    structured_output: bool = Field(
        default=True,
        description="Ask for the task's JSON schema when the LLM supports structured output, so every answer parses.",
    )

    @model_validator(mode="after")
    def _check_template(self) -> PromptedTask:
        if self.template is not None:
            unknown = sorted(set(template_variables(self.template)) - set(self.template_variables()))
            if unknown:
                raise ValueError(
                    f"the template uses {unknown}, which task {type(self).__name__} does not provide; "
                    f"it provides {sorted(self.template_variables())}."
                )
        return self

    # -- what a task defines -------------------------------------------------------------------

    def template_variables(self) -> list[str]:
        """The variables the template may use (documented on the task's page)."""
        return ["json"]

    def template_context(self, input: Row) -> dict[str, Any]:
        """The template's variables for one row."""
        return {}

    def response_schema(self) -> dict[str, Any] | None:
        """The JSON schema of one answer, or None when the task has none."""
        return None

    def unanswerable(self, input: Row) -> str | None:
        """Why this row cannot be judged (a response to judge is missing), or None when it can."""
        return None

    def items_shown(self, input: Row) -> int:
        """How many items the row's prompt shows, for a task with a ``counted_list``."""
        raise NotImplementedError(f"{type(self).__name__} sets counted_list but not items_shown()")

    def row_schema(self, input: Row) -> dict[str, Any] | None:
        """The schema for this row's answer when it depends on the row, else None.

        With ``counted_list``, that list property is fixed to one entry per item shown: small
        models do not count reliably, and a grammar that fixes the length makes them.
        """
        schema = self.response_schema() if self.counted_list is not None else None
        if schema is None or self.counted_list is None:
            return None
        count = self.items_shown(input)
        properties = schema["properties"]
        counted = {**properties[self.counted_list], "minItems": count, "maxItems": count}
        return {**schema, "properties": {**properties, self.counted_list: counted}}

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        """Output columns from the answer's JSON; raise ``ValueError`` if it is not usable."""
        raise ValueError("this task reads no JSON")

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        """Output columns from a free-text answer; raise ``ValueError`` if it is not usable."""
        raise ValueError("this task reads no free text")

    # -- shared machinery ------------------------------------------------------------------------

    def uses_json(self) -> bool:
        """Whether answers are held to the schema: asked for, and the LLM can do it."""
        return (
            self.structured_output
            and self.response_schema() is not None
            and self.resolve_llm().accepts("structured_output")
        )

    def llm_kwargs(self) -> dict[str, Any]:
        kwargs = super().llm_kwargs()
        if self.uses_json():
            kwargs.setdefault("structured_output", self.response_schema())
        return kwargs

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        reason = self.unanswerable(input)
        if reason is not None:  # nothing to judge: the row fails without paying for a call
            return failed_output(self.num_generations, f"task {self.name!r}: {reason}")
        # A schema set on the LLM itself wins, as in llm_kwargs (setdefault).
        own = "structured_output" in self.resolve_llm().generation_kwargs
        schema = self.row_schema(input) if self.uses_json() and not own else None
        if schema is None:
            return (yield from super().plan(input, chat))
        [output] = yield [Call(chat, self.num_generations, kwargs={"structured_output": schema})]
        return output

    def render(self, input: Row, **extra: Any) -> str:
        source = self.template if self.template is not None else packaged_template(self.template_name)
        return (
            compile_template(source).render({"json": self.uses_json(), **self.template_context(input), **extra}).strip()
        )

    def chat(self, user: str) -> ChatType:
        system = self.system_prompt if self.system_prompt is not None else self.default_system_prompt
        if system:
            return [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return [{"role": "user", "content": user}]

    def format_input(self, input: Row) -> ChatType:
        return self.chat(self.render(input))

    def answered_in_json(self, text: str, data: Any) -> bool:
        """Whether the reply is a JSON answer, so one that fails its checks is not read again as prose.

        It is when the whole reply is JSON (bare or alone in a fence), or when the object found
        names a key of the answer's schema; JSON quoted inside a prose answer is not.
        """
        if is_json_reply(text):
            return True
        keys = set((self.response_schema() or {}).get("properties", {}))
        return isinstance(data, dict) and bool(keys & set(data))

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        text = output or ""
        row = input or {}
        data: Any = None
        try:
            data = find_json(text)
            return self.from_json(data, row)
        except ValueError as json_error:
            if data is not None and self.answered_in_json(text, data):
                raise  # a JSON answer out of range is wrong, not prose to search for numbers
            try:
                return self.from_text(text, row)
            except ValueError as text_error:
                raise ValueError(f"{text_error} (read as JSON: {json_error})") from None


def replies_json(replies: dict[str, str | None] | list[Any]) -> str:
    """Several replies kept as one raw output: JSON, so every paid-for text survives, labelled."""
    return json.dumps(replies, ensure_ascii=False)


def token_sums(outputs: list[GenerateOutput], count: int) -> Statistics:
    """Token counts of several calls for the same ``count`` generations, added per generation."""

    inputs, outputs_ = [0] * count, [0] * count
    for output in outputs:
        tokens_in, tokens_out = token_counts(output.get("statistics"), count)
        for index in range(count):
            inputs[index] += tokens_in[index] or 0
            outputs_[index] += tokens_out[index] or 0
    return {"input_tokens": inputs, "output_tokens": outputs_}


def text_list(value: Any, column: str, task: str) -> list[Any]:
    """A list column's value, with an error naming the column when it is not a list."""
    if not isinstance(value, list):
        raise ValueError(f"task {task!r}: column {column!r} must be a list, got {type(value).__name__}")
    return value
