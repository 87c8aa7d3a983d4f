"""An example taskloom task pack: ``haiku`` and ``sentiment``.

Installing this package is enough for ``taskloom.get_task("haiku", llm=...)`` to find it; see
:mod:`taskloom_example_tasks.plugin` for the hook that registers the tasks.
"""

from taskloom_example_tasks.haiku import HaikuTask
from taskloom_example_tasks.sentiment import LABELS, SentimentTask

__version__ = "0.1.0"

__all__ = ["LABELS", "HaikuTask", "SentimentTask", "__version__"]
