"""Pytest fixtures for plugin authors, loaded automatically (``pytest11`` entry point).

``taskloom_plugin`` registers a plugin object for one test and removes it afterwards, so a test
can add a task or LLM without installing a package; ``taskloom_registry`` gives a test its own
registry, so what one test loads or breaks never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from taskloom.registry import Registry

PluginAdder = Callable[..., object]


@pytest.fixture
def taskloom_registry() -> Iterator[Registry]:
    """A fresh process-wide registry for this test (installed plugins are still discovered)."""
    from taskloom.registry import Registry, set_registry

    registry = Registry()
    previous = set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


@pytest.fixture
def taskloom_plugin(taskloom_registry: Registry) -> Iterator[PluginAdder]:
    """``taskloom_plugin(obj, name="my-plugin")`` registers ``obj``'s hooks for this test only.

    ``obj`` is anything pluggy accepts: a module, a class, or an instance with
    ``@taskloom.hookimpl`` methods. It returns ``obj``.
    """
    added: list[str] = []

    def add(plugin: object, name: str | None = None, package: str | None = None) -> object:
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        taskloom_registry.add_plugin(plugin, plugin_name, package=package or plugin_name)
        added.append(plugin_name)
        return plugin

    try:
        yield add
    finally:
        for name in reversed(added):
            taskloom_registry.remove_plugin(name)
