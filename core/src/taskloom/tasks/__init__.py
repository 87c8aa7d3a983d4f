"""Task base class, the built-in tasks, and the ``@task`` decorator."""

from taskloom.tasks.base import METADATA, Task
from taskloom.tasks.function_task import FunctionTask, task
from taskloom.tasks.text_generation import ChatGeneration, TextGeneration

__all__ = ["METADATA", "ChatGeneration", "FunctionTask", "Task", "TextGeneration", "task"]
