"""Helpers for testing tasks and plugins: scripted LLMs, fixtures, conformance suites.

Fixtures (``taskloom_registry``, ``taskloom_plugin``) are registered with pytest automatically
when taskloom is installed. Conformance suites live in :mod:`taskloom.testing.conformance`.
"""

from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM
from taskloom.testing.steps import processed

__all__ = ["ScriptedAsyncLLM", "ScriptedLLM", "processed"]
