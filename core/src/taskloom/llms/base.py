"""LLM: the contract every provider implements, and nothing more than it needs.

A provider declares ``model_name``, its ``Options`` (a :class:`GenerationOptions` model) and
``complete``; everything else here (validated generation kwargs, runtime parameters, dumps,
descriptions) comes for free so that third-party providers behave like ours.

Callers use :meth:`LLM.generate` (sync) or ``agenerate_batch`` / ``agenerate_one`` (async); a
provider implements ``complete`` (sync) or, through :class:`~taskloom.llms.AsyncLLM`,
``acomplete`` for one input. The two sides are kept apart so that every call is validated in
one place, whoever makes it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from taskloom.component import Component, RuntimeParameter
from taskloom.llms.options import GenerationOptions, describe_field, validate_options
from taskloom.typing import Chat, ChatType, GenerateOutput

MIGRATION = "docs/writing-an-llm-plugin.md"


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


def _check_contract(cls: type[LLM]) -> None:
    """Refuse, at class definition, a provider written for the signature-and-docstring contract.

    Such a class named its options as keyword parameters of ``generate`` / ``agenerate``; it
    would otherwise fail deep inside a run. The message says what to change.
    """
    for old, new in (("generate", "complete"), ("agenerate", "acomplete")):
        if old in cls.__dict__:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} overrides {old}(), which taskloom no longer calls on a "
                f"provider: implement {new}(self, {'inputs' if new == 'complete' else 'input'}, num_generations, "
                "options) instead, and declare the generation options it takes (temperature, max_new_tokens...) "
                "as fields of a nested `class Options(GenerationOptions)` rather than as keyword parameters. "
                f"See {MIGRATION}."
            )
    options = cls.__dict__.get("Options", cls.Options)
    if not (isinstance(options, type) and issubclass(options, GenerationOptions)):
        raise TypeError(
            f"{cls.__qualname__}.Options must be a subclass of taskloom.plugin.GenerationOptions, not {options!r}."
        )


class LLM(Component):
    """A language model that answers chat inputs.

    Implement ``model_name`` (a property or a field) and ``complete``; declare the generation
    options it takes in a nested ``Options`` model. ``complete`` gets a list of chat inputs and
    validated options, and returns one :class:`GenerateOutput` per input, in order.
    """

    model_config = ConfigDict(ignored_types=(_ModelNameSlot,))

    Options: ClassVar[type[GenerationOptions]] = GenerationOptions
    """The generation options this LLM takes: a :class:`GenerationOptions` subclass."""

    runs_locally: ClassVar[bool] = False
    """True for a model that runs on this machine (llama.cpp): its tokens cost no dollars."""

    spec_field: ClassVar[str | None] = "model"
    """The field that the text after ``name:`` sets in a short LLM spec such as ``openai:gpt-4o-mini``."""

    if TYPE_CHECKING:

        @property
        def model_name(self) -> str: ...

    else:
        model_name = _ModelNameSlot()

    generation_kwargs: RuntimeParameter[dict[str, Any]] = Field(
        default_factory=dict,
        description="Generation options for every call (temperature, max_new_tokens...); see the LLM's Options.",
    )
    _last_options: tuple[dict[str, Any], GenerationOptions] | None = PrivateAttr(default=None)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _check_contract(cls)

    @field_validator("generation_kwargs")
    @classmethod
    def _valid_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Kept as the plain data that was given (a pydantic schema becomes its JSON schema), checked
        # against Options so that a wrong name, type or value fails here and not at the first call.
        return validate_options(cls.__name__, cls.Options, value).model_dump(exclude_unset=True)

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(inspect.getattr_static(type(self), "model_name"), _ModelNameSlot) and (
            "model_name" not in type(self).model_fields
        ):
            raise TypeError(f"{type(self).__name__} must define model_name (a property or a field).")

    def load(self) -> None:
        """Open clients or load weights. Called before the first ``generate``."""

    def unload(self) -> None:
        """Release what ``load`` acquired."""

    def is_loaded(self) -> bool:
        """Whether ``load`` has run and ``unload`` has not (False when this LLM cannot tell).

        A pipeline still calls ``load`` (so ``load`` must be cheap on a loaded LLM) but leaves an
        LLM its caller loaded as it found it, loaded, so running several pipelines on one local
        model does not load it again for each; an LLM that answers False here is unloaded by
        every run, as before. Override it when loading costs time.
        """
        return False

    def completes_raw_text(self) -> bool:
        """Whether this LLM completes raw text as it is, with no chat template around it.

        Such an LLM may get a ``str`` as an input instead of chat messages (Magpie completes the
        text of a chat template up to a user turn; URIAL prompts a base model). False by default:
        an LLM says True only if its ``complete`` handles a ``str`` input.
        """
        return False

    def reads_images(self) -> bool:
        """Whether this LLM can be sent image parts (``{"type": "image_url", ...}`` in a message's content).

        False by default: a row whose chat holds an image is then refused before any request, as a
        :class:`~taskloom.errors.BadRequestError` naming the model, rather than sent with its
        pictures dropped. A provider says True only if its requests carry the images (see
        :mod:`taskloom.images`); whether the model itself sees is for the server to say.
        """
        return False

    def calls_tools(self) -> bool:
        """Whether this LLM answers with native tool calls when given a ``tools`` option.

        By default, whether its ``Options`` take ``tools``. A provider whose server takes the
        option but whose model may not call tools (a small model behind an OpenAI-compatible
        server) lets its user say no, so a task asks with the schemas in the prompt instead.
        """
        return self.accepts("tools")

    def render_chat(self, messages: Chat) -> str | None:
        """The text this LLM's chat template makes of ``messages``, ending where the assistant's
        answer would begin; None when the template is not known here (an API model).

        Magpie reads a model's own template through it; a task given an LLM that returns None
        asks its user to name a template family instead.
        """
        return None

    def answers_as(self) -> LLM:
        """The LLM whose answers these are, for the cache: itself, unless it forwards to another.

        A stand-in that sends its calls to a model served elsewhere (an executor's model actor)
        answers as the model it stands in for, so both key the cache the same way and a run moved
        from one executor to another reuses what it paid for.
        """
        return self

    # -- what callers use ----------------------------------------------------------------------

    def options(self, overrides: Mapping[str, Any] | None = None) -> GenerationOptions:
        """This LLM's ``generation_kwargs`` with ``overrides`` on top, validated as its ``Options``.

        The pipeline asks once per request, mostly with the same values: the last validated set is
        kept and reused while the values are equal (a comparison, not a validation).
        """
        values = {**self.generation_kwargs, **overrides} if overrides else self.generation_kwargs
        cached = self._last_options
        if cached is not None and cached[0] == values:
            return cached[1]
        options = validate_options(type(self).__name__, self.Options, values)
        self._last_options = (copy.deepcopy(values), options)
        return options

    def generate(self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any) -> list[GenerateOutput]:
        """Answer every chat input ``num_generations`` times; one output per input, in order.

        ``kwargs`` are generation options on top of ``generation_kwargs``, checked against
        ``Options``.
        """
        return self.complete(list(inputs), num_generations, self.options(kwargs))

    async def agenerate_batch(
        self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any
    ) -> list[GenerateOutput]:
        """Await ``generate`` from async code: it runs in a worker thread so the event loop goes on.

        :class:`~taskloom.llms.AsyncLLM` overrides this with real concurrency.
        """
        import asyncio

        options = self.options(kwargs)
        return await asyncio.to_thread(self.complete, list(inputs), num_generations, options)

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

    # -- what a provider implements -------------------------------------------------------------

    def complete(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        """Answer every input ``num_generations`` times with ``options`` (an instance of ``Options``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement complete(inputs, num_generations, options).")

    def requests_at_once(self) -> int:
        """How many calls a run keeps in flight to this LLM: one for a sync LLM that answers one at
        a time; an async LLM's ``max_concurrency``; a local model that decodes several answers
        together says how many."""
        return 1

    def in_batch_mode(self) -> bool:
        """Whether this LLM sends its requests through a provider's batch API (priced at its batch discount)."""
        return False

    max_batch_requests: ClassVar[int] = 50_000
    """The most requests one batch job of this provider takes (OpenAI: 50,000 lines)."""

    def batch_requests(self, num_generations: int) -> int:
        """Requests one input with ``num_generations`` answers makes in a batch job (OpenAI: one line, ``n``)."""
        return 1

    # -- descriptions ----------------------------------------------------------------------------

    def generation_parameters(self) -> dict[str, str]:
        """Generation options this LLM accepts, with their descriptions."""
        return {name: field.description or "" for name, field in self.Options.model_fields.items()}

    def accepts(self, option: str) -> bool:
        """Whether this LLM takes ``option``; an Options model that types it as ``None`` says it does not."""
        field = self.Options.model_fields.get(option)
        return field is not None and field.annotation is not type(None)

    @classmethod
    def options_info(cls) -> list[dict[str, Any]]:
        """Every option with its type, default, range and description (``taskloom llms NAME``)."""
        return [describe_field(name, field) for name, field in cls.Options.model_fields.items()]

    def runtime_parameters_info(self) -> list[dict[str, Any]]:
        info = super().runtime_parameters_info()
        for entry in info:
            if entry["name"] == "generation_kwargs":
                entry["keys"] = [{**option, "optional": True} for option in self.options_info()]
        return info

    def set_runtime_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Set runtime parameters; a generation option may also be given at top level."""
        params = dict(parameters)
        options = self.Options.model_fields
        loose = {k: params.pop(k) for k in list(params) if k in options and k not in self.runtime_fields()}
        if "generation_kwargs" in params or loose:
            given = params.pop("generation_kwargs", None) or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"{type(self).__name__}: generation_kwargs must be a mapping, got {given!r}.")
            merged = {**self.generation_kwargs, **given, **loose}
            validate_options(type(self).__name__, self.Options, merged)  # an OptionError, not pydantic's wrapper
            params["generation_kwargs"] = merged
        super().set_runtime_parameters(params)

    def describe(self) -> dict[str, Any]:
        return {"runtime_parameters": self.runtime_parameters_info(), "options": self.options_info()}
