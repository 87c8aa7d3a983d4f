"""LLM: the contract every provider implements, and nothing more than it needs.

A provider writes ``model_name`` and ``generate``; everything else here (runtime generation
kwargs, dumps, descriptions) comes for free so that third-party providers behave like ours.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from taskloom.component import Component, RuntimeParameter
from taskloom.typing import ChatType, GenerateOutput


class _ModelNameSlot:
    """Placeholder for ``model_name`` that a field or a property in the subclass replaces.

    A non-data descriptor, so a pydantic field of the same name (stored in the instance
    ``__dict__``) takes precedence; an abstract property would hide such a field.
    """

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            # Invisible on the class, so pydantic does not warn that a field shadows it.
            raise AttributeError("model_name")
        raise NotImplementedError(f"{type(obj).__name__} must define model_name (a property or a field).")


_POSITIONAL = {"self", "inputs", "input", "num_generations"}


@cache
def _generation_signature(func: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword parameters of a generate method, and whether it also takes ``**kwargs``."""
    params = inspect.signature(func).parameters
    named = {
        n: p for n, p in params.items() if n not in _POSITIONAL and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return named, open_ended


@cache
def _docstring_args(func: Callable[..., Any]) -> dict[str, str]:
    """``name: description`` lines of a Google-style ``Args:`` section."""
    doc = inspect.getdoc(func) or ""
    section = re.search(r"^\s*Args:\s*$(.*?)(^\S|\Z)", doc, re.M | re.S)
    if not section:
        return {}
    found: dict[str, str] = {}
    for match in re.finditer(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$", section.group(1), re.M):
        found[match.group(1)] = match.group(2).strip()
    return found


class LLM(Component):
    """A language model that answers chat inputs.

    Implement ``model_name`` (a property or a field) and ``generate``. ``generate`` gets a list
    of chat inputs and returns one :class:`GenerateOutput` per input, in order.
    Keyword parameters of ``generate`` (``temperature``, ``max_new_tokens``...) are its
    generation kwargs: set them with ``generation_kwargs`` at construction or run time.
    """

    model_config = ConfigDict(ignored_types=(_ModelNameSlot,))

    generation_kwargs_from: ClassVar[str] = "generate"
    """The method whose keyword parameters are this LLM's generation kwargs.

    Point it elsewhere when ``generate`` takes ``**kwargs`` and forwards them to a method that
    names each one (AsyncLLM uses ``agenerate``), so they are still described and checked.
    """

    spec_field: ClassVar[str | None] = "model"
    """The field that the text after ``name:`` sets in a short LLM spec such as ``openai:gpt-4o-mini``."""

    if TYPE_CHECKING:

        @property
        def model_name(self) -> str: ...

    else:
        model_name = _ModelNameSlot()

    generation_kwargs: RuntimeParameter[dict[str, Any]] = Field(
        default_factory=dict,
        description="Keyword arguments passed to every generate call (temperature, max_new_tokens...).",
    )

    @field_serializer("generation_kwargs")
    def _plain_generation_kwargs(self, value: dict[str, Any]) -> dict[str, Any]:
        # A pydantic model given as structured_output dumps as its JSON schema: plain data.
        return {
            key: item.model_json_schema() if isinstance(item, type) and issubclass(item, BaseModel) else item
            for key, item in value.items()
        }

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(inspect.getattr_static(type(self), "model_name"), _ModelNameSlot) and (
            "model_name" not in type(self).model_fields
        ):
            raise TypeError(f"{type(self).__name__} must define model_name (a property or a field).")
        self._check_generation_kwargs(self.generation_kwargs)

    def load(self) -> None:
        """Open clients or load weights. Called before the first ``generate``."""

    def unload(self) -> None:
        """Release what ``load`` acquired."""

    def generate(self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any) -> list[GenerateOutput]:
        """Answer every chat input ``num_generations`` times; one output per input, in order."""
        raise NotImplementedError(f"{type(self).__name__} must implement generate().")

    # -- generation kwargs -------------------------------------------------------------------

    async def agenerate_batch(
        self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any
    ) -> list[GenerateOutput]:
        """Await ``generate`` from async code: it runs in a worker thread so the event loop goes on.

        ``generation_kwargs`` set on this LLM apply; ``kwargs`` given here override them.
        :class:`~taskloom.llms.AsyncLLM` overrides this with real concurrency.
        """
        import asyncio

        merged = {**self.generation_kwargs, **kwargs}
        return await asyncio.to_thread(self.generate, inputs, num_generations, **merged)

    async def agenerate_one(
        self, input: ChatType, num_generations: int = 1, *, on_retry: Any = None, **kwargs: Any
    ) -> GenerateOutput:
        """Answer one input from async code; a per-input failure comes back as a failed output.

        A sync LLM has no retry policy of its own, so ``on_retry`` is never called here.
        """
        from taskloom.errors import GenerationError
        from taskloom.llms.async_llm import failed_output

        try:
            [output] = await self.agenerate_batch([input], num_generations, **kwargs)
        except GenerationError as error:
            return failed_output(num_generations, error)
        return output

    def _generate_method(self) -> Callable[..., Any]:
        method: Callable[..., Any] = getattr(type(self), self.generation_kwargs_from)
        return method

    def generation_parameters(self) -> dict[str, str]:
        """Generation kwargs this LLM accepts, with their descriptions."""
        method = self._generate_method()
        named, _ = _generation_signature(method)
        docs = _docstring_args(method)
        return {name: docs.get(name, "") for name in named}

    def _check_generation_kwargs(self, kwargs: Mapping[str, Any]) -> None:
        named, open_ended = _generation_signature(self._generate_method())
        unknown = [k for k in kwargs if k not in named]
        if unknown and not open_ended:
            raise ValueError(
                f"{type(self).__name__} does not accept the generation kwarg(s) {unknown}; it accepts {sorted(named)}."
            )

    def runtime_parameters_info(self) -> list[dict[str, Any]]:
        info = super().runtime_parameters_info()
        for entry in info:
            if entry["name"] == "generation_kwargs":
                entry["keys"] = [
                    {"name": name, "description": desc, "optional": True}
                    for name, desc in self.generation_parameters().items()
                ]
        return info

    def set_runtime_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Set runtime parameters; a known generation kwarg may also be given at top level."""
        params = dict(parameters)
        named, _ = _generation_signature(self._generate_method())
        loose = {k: params.pop(k) for k in list(params) if k in named and k not in self.runtime_fields()}
        if "generation_kwargs" in params or loose:
            merged = {**self.generation_kwargs, **params.pop("generation_kwargs", {}), **loose}
            self._check_generation_kwargs(merged)
            params["generation_kwargs"] = merged
        super().set_runtime_parameters(params)

    def describe(self) -> dict[str, Any]:
        return {"runtime_parameters": self.runtime_parameters_info()}
