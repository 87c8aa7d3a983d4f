"""Checking a parsed answer against the parts of JSON schema judges use.

Top-level properties only: required keys, types, ``enum``, and numeric ``minimum`` /
``maximum``, through local ``$ref`` and ``anyOf``/``oneOf`` (how pydantic writes enums and
optional fields). That is what decides whether a judge's answer can be used as a column; a full
JSON-schema validator would add a dependency for nothing these schemas need.
"""

from __future__ import annotations

from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with a local ``$ref`` ("#/$defs/Tone", as pydantic writes enums and models) filled in."""
    ref = spec.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return spec
    target: Any = schema
    for part in ref[2:].split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    if not isinstance(target, dict):
        raise ValueError(f"the schema's {ref!r} points nowhere")
    return {**_resolve(target, schema), **{k: v for k, v in spec.items() if k != "$ref"}}


def _check_value(key: str, value: Any, spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    spec = _resolve(spec, schema)
    options = spec.get("anyOf", spec.get("oneOf"))
    if isinstance(options, list) and options:  # pydantic's Optional[int] is anyOf [integer, null]
        rest = {k: v for k, v in spec.items() if k not in {"anyOf", "oneOf"}}
        errors = []
        for option in options:
            try:
                return _check_value(key, value, {**rest, **option} if isinstance(option, dict) else rest, schema)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError("; or ".join(errors))
    kind = spec.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and "integer" in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kinds and "integer" in kinds and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if kinds:
        allowed = tuple(t for k in kinds for t in _TYPES.get(k, (object,)))
        if not isinstance(value, allowed) or (isinstance(value, bool) and "boolean" not in kinds):
            raise ValueError(f"{key!r} should be {' or '.join(kinds)}, got {value!r:.60}")
    if "enum" in spec and value not in spec["enum"]:
        raise ValueError(f"{key!r} should be one of {spec['enum']}, got {value!r:.60}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in spec and value < spec["minimum"]:
            raise ValueError(f"{key!r} is {value}, below the minimum {spec['minimum']}")
        if "maximum" in spec and value > spec["maximum"]:
            raise ValueError(f"{key!r} is {value}, above the maximum {spec['maximum']}")
    return value


def check_object(data: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The schema's properties read from ``data`` (absent optional ones as None), or ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    properties: dict[str, Any] = schema.get("properties", {})
    missing = [key for key in schema.get("required", []) if key not in data]
    if missing:
        raise ValueError(f"the answer lacks {missing}")
    out: dict[str, Any] = {}
    for key, spec in properties.items():
        value = data.get(key)
        out[key] = (
            None
            if value is None and key not in schema.get("required", [])
            else _check_value(key, value, spec if isinstance(spec, dict) else {}, schema)
        )
    return out
