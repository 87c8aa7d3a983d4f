"""Finding plugins: entry points, the allow/deny lists, and the core-version check.

The loop that imports them lives in :mod:`taskloom.registry`, one ``try`` per plugin, so one
broken package never hides the others. This module only answers "which plugins are there, may
they load, and do they accept this core?".
"""

from __future__ import annotations

import operator
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import Distribution, EntryPoint, entry_points
from typing import Literal

from taskloom._version import __version__
from taskloom.errors import PluginError

GROUP = "taskloom"
"""The entry-point group every plugin registers under."""

Status = Literal["loaded", "failed", "disabled", "not loaded"]


@dataclass
class PluginRecord:
    """What ``taskloom plugins`` shows for one plugin."""

    name: str
    package: str
    version: str
    target: str
    status: Status = "not loaded"
    error: str | None = None
    registered: list[str] = field(default_factory=list)

    def label(self) -> str:
        return f"{self.package} {self.version} (entry point {self.name!r})"


def package_of(ep: EntryPoint) -> tuple[str, str]:
    """Distribution name and version behind an entry point."""
    dist: Distribution | None = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"] or "unknown", dist.version or "unknown"


def discover() -> list[EntryPoint]:
    """Entry points of the group, sorted by name for a stable load order.

    ``entry_points`` already lists each installed distribution once (the first on ``sys.path``),
    so nothing is deduplicated here, and no distribution's metadata is read: that parsing is left
    to the plugins that load (their records name the package), a few milliseconds of every start.
    """
    return sorted(entry_points(group=GROUP), key=lambda ep: (ep.name, ep.value))


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable, "").strip()
    if not value:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def is_enabled(name: str) -> bool:
    """Apply ``TASKLOOM_PLUGINS`` (allow-list) and ``TASKLOOM_DISABLE_PLUGINS`` (deny-list)."""
    allowed = _names("TASKLOOM_PLUGINS")
    denied = _names("TASKLOOM_DISABLE_PLUGINS") or set()
    return name not in denied and (allowed is None or name in allowed)


def strict() -> bool:
    """``TASKLOOM_STRICT_PLUGINS=1``: a plugin that fails to load raises instead of warning."""
    return os.environ.get("TASKLOOM_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_COMPARE = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_SIMPLE_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+)*)\s*")


def _release(version: str) -> tuple[int, ...] | None:
    """A plain ``X.Y.Z`` version as a tuple without trailing zeros, or None for anything richer."""
    if not re.fullmatch(r"\d+(?:\.\d+)*", version):
        return None
    parts = [int(part) for part in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _simple_contains(specifier: str, version: str) -> bool | None:
    """Decide ``version in specifier`` for plain numeric clauses (``>=0.1,<1``), else None.

    Every plugin declares its core range this way, and answering it by hand keeps ``packaging``
    (about 30 ms of regular expressions to import) off the path of every ``get_llm`` call.
    """
    running = _release(version)
    if running is None:
        return None
    for clause in specifier.split(","):
        if not clause.strip():
            continue
        match = _SIMPLE_CLAUSE.fullmatch(clause)
        if match is None:
            return None
        bound = _release(match.group(2))
        if bound is None or not _COMPARE[match.group(1)](running, bound):
            return False
    return True


def _plain_clauses(rest: str) -> str | None:
    """The version clauses after a requirement's name, if plain (no extras, URL or marker)."""
    rest = rest.strip()
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    return rest if not any(sign in rest for sign in "[;@(") else None


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: ``Task_Loom`` and ``task.loom`` name the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def check_core_requirement(ep: EntryPoint) -> None:
    """Refuse a plugin whose declared ``taskloom`` requirement excludes the running core."""
    dist: Distribution | None = getattr(ep, "dist", None)
    if dist is None:
        return
    for spec in dist.requires or []:
        name = _NAME.match(spec)
        if name is None or canonical_name(name.group(1)) != "taskloom":
            continue
        plain = _plain_clauses(spec[name.end() :])
        accepted = _simple_contains(plain, __version__) if plain is not None else None
        specifier = (plain or "").replace(" ", "")
        if accepted is None:
            accepted, specifier = _packaging_contains(spec)
        if accepted is False:
            package, version = package_of(ep)
            raise PluginError(
                f"{package} {version} requires taskloom{specifier}, but taskloom "
                f"{__version__} is running. Install a version of {package} made for taskloom "
                f"{__version__}, or disable it with TASKLOOM_DISABLE_PLUGINS={ep.name}."
            )


def _packaging_contains(spec: str) -> tuple[bool | None, str]:
    """The full PEP 508/440 answer, for requirements the plain path cannot read (None: ignore)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(spec)
    except InvalidRequirement:
        return None, ""
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        return None, ""
    return requirement.specifier.contains(__version__, prereleases=True), str(requirement.specifier)
