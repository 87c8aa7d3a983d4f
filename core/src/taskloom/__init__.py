"""taskloom: generate and judge data with LLMs.

``import taskloom`` is cheap: names below are imported on first use, no plugin is loaded and no
provider SDK is imported until a lookup needs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom._lazy import lazy_getattr
from taskloom._version import __version__

if TYPE_CHECKING:
    from taskloom.component import RuntimeParameter
    from taskloom.config import default_llm, llm_from_spec
    from taskloom.errors import (
        GenerationError,
        MissingColumnError,
        NoDefaultLLMError,
        PluginConflictError,
        PluginError,
        TaskloomError,
        UnknownNameError,
    )
    from taskloom.hookspecs import hookimpl
    from taskloom.llms import LLM, AsyncLLM
    from taskloom.pipeline import Pipeline
    from taskloom.registry import (
        get_llm,
        get_sink,
        get_source,
        get_step,
        get_task,
        list_llms,
        list_plugins,
        list_tasks,
        load_llm,
        load_task,
    )
    from taskloom.steps import Step
    from taskloom.tasks import ChatGeneration, Task, TextGeneration, task
    from taskloom.typing import ChatType, GenerateOutput

_LAZY = {
    "RuntimeParameter": "taskloom.component",
    "GenerationError": "taskloom.errors",
    "MissingColumnError": "taskloom.errors",
    "NoDefaultLLMError": "taskloom.errors",
    "default_llm": "taskloom.config",
    "llm_from_spec": "taskloom.config",
    "PluginConflictError": "taskloom.errors",
    "PluginError": "taskloom.errors",
    "TaskloomError": "taskloom.errors",
    "UnknownNameError": "taskloom.errors",
    "hookimpl": "taskloom.hookspecs",
    "LLM": "taskloom.llms",
    "AsyncLLM": "taskloom.llms",
    "Pipeline": "taskloom.pipeline",
    "get_llm": "taskloom.registry",
    "get_task": "taskloom.registry",
    "get_step": "taskloom.registry",
    "get_source": "taskloom.registry",
    "get_sink": "taskloom.registry",
    "list_llms": "taskloom.registry",
    "list_plugins": "taskloom.registry",
    "list_tasks": "taskloom.registry",
    "load_llm": "taskloom.registry",
    "load_task": "taskloom.registry",
    "Step": "taskloom.steps",
    "Task": "taskloom.tasks",
    "TextGeneration": "taskloom.tasks",
    "ChatGeneration": "taskloom.tasks",
    "task": "taskloom.tasks",
    "ChatType": "taskloom.typing",
    "GenerateOutput": "taskloom.typing",
}

__all__ = [
    "LLM",
    "AsyncLLM",
    "ChatGeneration",
    "ChatType",
    "GenerateOutput",
    "GenerationError",
    "MissingColumnError",
    "NoDefaultLLMError",
    "Pipeline",
    "PluginConflictError",
    "PluginError",
    "RuntimeParameter",
    "Step",
    "Task",
    "TaskloomError",
    "TextGeneration",
    "UnknownNameError",
    "__version__",
    "default_llm",
    "get_llm",
    "get_sink",
    "get_source",
    "get_step",
    "get_task",
    "hookimpl",
    "list_llms",
    "list_plugins",
    "list_tasks",
    "llm_from_spec",
    "load_llm",
    "load_task",
    "task",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)
