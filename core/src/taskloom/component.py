"""The base that steps, tasks and LLMs share: runtime parameters and plain-data dumps.

A pipeline is a config file, so every component must round-trip through plain data by its
registry name, and must let a user change some fields (the *runtime parameters*) after it was
built, for example from the command line, without rebuilding it.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic.fields import FieldInfo

T = TypeVar("T")


class _RuntimeMarker:
    """Marks a field as settable at run time; found in ``FieldInfo.metadata``."""

    def __repr__(self) -> str:
        return "RUNTIME"


RUNTIME = _RuntimeMarker()

RuntimeParameter = Annotated[T, RUNTIME]
"""``RuntimeParameter[int]``: a field that ``set_runtime_parameters`` may change."""


_DEFINED: weakref.WeakValueDictionary[str, type[Component]] = weakref.WeakValueDictionary()
"""Every component class by import path, so one defined in a function still loads from a dump."""


def defined_class(type_name: str) -> type[Component] | None:
    """The live class a dump's ``module:qualname`` names, if this process defined it."""
    return _DEFINED.get(type_name)


def kebab_case(name: str) -> str:
    """``MyCustomTask`` -> ``my-custom-task``: the default name of an unregistered class."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name)
    return name.replace("_", "-").lower()


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in getattr(annotation, "__args__", ()) or ())


def _marked_runtime(annotation: Any) -> bool:
    """Whether ``RUNTIME`` marks the annotation, also inside ``Optional[...]`` / ``X | None``."""
    if get_origin(annotation) is Annotated:
        return any(m is RUNTIME for m in annotation.__metadata__) or _marked_runtime(get_args(annotation)[0])
    return any(_marked_runtime(arg) for arg in get_args(annotation))


def is_runtime_field(field: FieldInfo) -> bool:
    """A field declared ``RuntimeParameter[T]``, ``Optional[RuntimeParameter[T]]`` or ``RuntimeParameter[T] | None``."""
    return any(m is RUNTIME for m in field.metadata) or _marked_runtime(field.annotation)


def field_default(field: FieldInfo) -> Any:
    """A field's default as users see it (a factory's value too), or None when it is required."""
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _optional(field: FieldInfo) -> bool:
    """Whether a run may leave the field as it is: it has a real default, or None is a valid value."""
    accepts_none = type(None) in get_args(field.annotation) or field.annotation is type(None)
    return accepts_none or not (field.is_required() or field.default is None)


class Component(BaseModel):
    """Fields, runtime parameters and a dump that never contains a secret."""

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        validate_assignment=True,
        extra="forbid",
        protected_namespaces=(),
        # A mistyped field name (``apikey=...``) must not echo the secret in the error.
        hide_input_in_errors=True,
        # Validators are built when a class is first used, not when it is defined: a start imports
        # dozens of components (every source, sink and built-in task) and uses a few, and building
        # the rest took about 20 ms before the first request. A plugin's classes are still built
        # as it registers them, so a broken one is reported with its package (see the registry).
        defer_build=True,
    )

    registry_name: ClassVar[str | None] = None
    """The name this class is registered under. Declare it on your class: it is the default
    step name and the ``type`` in dumps. Without it a dump names the class by import path."""

    @classmethod
    def own_registry_name(cls) -> str | None:
        """The registry name declared on this very class (a subclass does not inherit it)."""
        name = cls.__dict__.get("registry_name")
        return name if isinstance(name, str) else None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _DEFINED[f"{cls.__module__}:{cls.__qualname__}"] = cls
        # A runtime parameter declared without a default is set later (set_runtime_parameters, a
        # pipeline file, --set): until then it is None, as in distilabel, not a construction error.
        unset = [f for f in cls.model_fields.values() if f.is_required() and is_runtime_field(f)]
        if unset:
            for field in unset:
                field.default = None
            cls.model_rebuild(force=True)

    @classmethod
    def type_name(cls) -> str:
        """How a dump names this class: its registry name, else its import path."""
        return cls.own_registry_name() or f"{cls.__module__}:{cls.__qualname__}"

    # -- runtime parameters ------------------------------------------------------------------

    @classmethod
    def runtime_fields(cls) -> list[str]:
        return [n for n, f in cls.model_fields.items() if is_runtime_field(f)]

    def runtime_parameters_info(self) -> list[dict[str, Any]]:
        """Every runtime parameter with its description, default, current value and whether it is optional."""
        info = []
        for name in self.runtime_fields():
            field = type(self).model_fields[name]
            info.append(
                {
                    "name": name,
                    "description": field.description or "",
                    "optional": _optional(field),
                    "default": field_default(field),
                    "value": getattr(self, name, None),
                }
            )
        return info

    def set_runtime_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Set runtime parameters by name, validated like the constructor validates them."""
        allowed = self.runtime_fields()
        for key, value in parameters.items():
            if key not in allowed:
                raise ValueError(
                    f"{type(self).__name__} has no runtime parameter {key!r}; its runtime parameters are {allowed}."
                )
            setattr(self, key, value)

    # -- serialization -----------------------------------------------------------------------

    @classmethod
    def _dump_exclusions(cls) -> set[str]:
        return {name for name, field in cls.model_fields.items() if field.exclude or _is_secret(field.annotation)}

    def dump(self) -> dict[str, Any]:
        """Plain JSON-ready data naming the class, without secrets; ``load_*`` rebuilds it."""
        data = self.model_dump(mode="json", exclude=self._dump_exclusions())
        return {"type": self.type_name(), **data}

    def __eq__(self, other: object) -> bool:
        # Equal configuration means equal components; loaded clients and caches do not count.
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, BaseModel)
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __repr_args__(self) -> Any:
        excluded = {n for n, f in type(self).model_fields.items() if not f.repr}
        return [(k, v) for k, v in super().__repr_args__() if k not in excluded]
