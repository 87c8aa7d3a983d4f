"""The plugin module named by this package's ``taskloom`` entry point.

taskloom imports it only when a lookup needs it (``get_task("haiku")``, ``list_tasks()``,
``taskloom plugins``), never on ``import taskloom``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import taskloom

if TYPE_CHECKING:
    from taskloom.registry import TaskRegister


@taskloom.hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom_example_tasks.haiku import HaikuTask
    from taskloom_example_tasks.sentiment import SentimentTask

    register("haiku", HaikuTask)
    register("sentiment", SentimentTask)
