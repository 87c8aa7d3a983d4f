"""The ``ray`` entry point: registers the Ray executor."""

from __future__ import annotations

from taskloom.plugin import ExecutorRegister, hookimpl


@hookimpl
def register_executors(register: ExecutorRegister) -> None:
    from taskloom_ray.executor import RayExecutor

    register(RayExecutor)
