"""taskloom on a Ray cluster: ``Pipeline.run(executor="ray")`` or ``taskloom run --executor ray``.

Importing this package imports no Ray: the executor imports it when a run starts.
"""

from __future__ import annotations

from taskloom_ray.executor import RayExecutor

__all__ = ["RayExecutor"]
