"""The plugin module named by this package's ``taskloom`` entry point.

taskloom imports it only when a lookup needs it (``get_task("haiku")``, ``list_tasks()``,
``taskloom plugins``), never on ``import taskloom``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import TaskRegister


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom_example_tasks.haiku import HaikuTask
    from taskloom_example_tasks.sentiment import SentimentTask

    register(HaikuTask)
    register(SentimentTask)
