"""Finding plugins: entry points, the allow/deny lists, and the core-version check.

The loop that imports them lives in :mod:`taskloom.registry`, one ``try`` per plugin, so one
broken package never hides the others. This module only answers "which plugins are there, may
they load, and do they accept this core?".
"""

from __future__ import annotations

import os
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
    """Entry points of the group, each once, sorted by name for a stable load order."""
    seen: dict[tuple[str, str, str], EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        package, _ = package_of(ep)
        seen.setdefault((ep.name, ep.value, package), ep)
    return sorted(seen.values(), key=lambda ep: (ep.name, ep.value))


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


def check_core_requirement(ep: EntryPoint) -> None:
    """Refuse a plugin whose declared ``taskloom`` requirement excludes the running core."""
    dist: Distribution | None = getattr(ep, "dist", None)
    if dist is None:
        return
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    for spec in dist.requires or []:
        try:
            requirement = Requirement(spec)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != "taskloom":
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        if not requirement.specifier.contains(__version__, prereleases=True):
            package, version = package_of(ep)
            raise PluginError(
                f"{package} {version} requires taskloom{requirement.specifier}, but taskloom "
                f"{__version__} is running. Install a version of {package} made for taskloom "
                f"{__version__}, or disable it with TASKLOOM_DISABLE_PLUGINS={ep.name}."
            )
