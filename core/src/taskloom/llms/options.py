"""Generation options, declared: one pydantic model per LLM class says what it accepts.

Options used to be read off a ``generate`` signature and its docstring, which made a docstring's
layout part of the API and let ``temperature="hot"`` through. Now each LLM class names an
``Options`` model (a :class:`GenerationOptions` subclass): types, ranges, defaults and
descriptions live there, and runtime parameters, ``taskloom llms NAME``, the conformance suite
and the docs all read it. A provider extends the shared names and may tighten them::

    class AcmeLLM(HTTPLLM):
        class Options(GenerationOptions):
            temperature: float | None = Field(default=None, ge=0, le=2)
            max_new_tokens: int | None = Field(default=512, ge=1)
            logit_bias: dict[str, float] | None = Field(default=None, description="...")
"""

from __future__ import annotations

from collections.abc import Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from taskloom.errors import TaskloomError


def json_schema_of(value: Any) -> Any:
    """A pydantic model class as its JSON schema; anything else as it is.

    The one place a model becomes a schema, so a task's schema, a cached call's key and the
    schema a provider sends can never disagree.
    """
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    return value


OutputSchema = Annotated[dict[str, Any], BeforeValidator(json_schema_of)]
"""A JSON schema that may be given as a pydantic model class; stored as plain data."""


class OptionError(TaskloomError, ValueError):
    """A generation option with a wrong name, type or value."""


class GenerationOptions(BaseModel):
    """The options every provider understands under the same names.

    ``None`` means "the provider's own default". A provider that cannot honour one (Anthropic
    has no seed) still accepts it, so a config ports from one provider to another, and says what
    it does with it in the field's description.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=False)

    temperature: float | None = Field(default=None, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float | None = Field(
        default=None, gt=0, le=1, description="Nucleus sampling: sample from the smallest token set of this mass."
    )
    max_new_tokens: int | None = Field(default=None, ge=1, description="Most tokens per answer.")
    stop: list[str] | None = Field(default=None, description="Sequences that end an answer.")
    seed: int | None = Field(default=None, description="Seed for reproducible sampling, where the model offers it.")
    structured_output: OutputSchema | None = Field(
        default=None,
        description="A JSON schema (or a pydantic model class) the answer must follow, where the model supports it.",
    )


def describe_field(name: str, field: FieldInfo) -> dict[str, Any]:
    """One option as ``taskloom llms NAME`` and the docs show it: type, default, range, description."""
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value}")
    return {
        "name": name,
        "type": _type_label(field.annotation),
        "default": None if field.is_required() else field.get_default(call_default_factory=True),
        "range": ", ".join(bounds),
        "description": field.description or "",
    }


def _type_label(annotation: Any) -> str:
    """``float | None``, ``list[str] | None``, ``dict[str, Any] | None``: what a user would write."""
    if get_origin(annotation) is Annotated:
        return _type_label(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return " | ".join(_type_label(arg) for arg in get_args(annotation))
    if annotation is type(None):
        return "None"
    if get_args(annotation):
        return str(annotation).replace("typing.", "")
    return str(getattr(annotation, "__name__", annotation))


def options_summary(model: type[GenerationOptions]) -> str:
    """``name (type, range)`` for every option, for error messages."""
    parts = []
    for name, field in model.model_fields.items():
        info = describe_field(name, field)
        detail = ", ".join(x for x in (info["type"], info["range"]) if x)
        parts.append(f"{name} ({detail})")
    return "; ".join(parts)


def validate_options(owner: str, model: type[GenerationOptions], values: Mapping[str, Any]) -> GenerationOptions:
    """``values`` as ``model``, or an :class:`OptionError` naming the LLM, each bad option, its value
    and the valid options."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "?"
            top = str(item["loc"][0]) if item["loc"] else name
            if item["type"] == "extra_forbidden":
                problems.append(f"unknown option {top!r} (given {values.get(top)!r})")
            else:
                problems.append(f"option {name!r} = {values.get(top)!r}: {item['msg']}")
        raise OptionError(f"{owner}: {'; '.join(problems)}. Valid options: {options_summary(model)}.") from None
