"""The plugin contract: every hook a taskloom plugin may implement.

A plugin is a module (or object) with functions marked ``@taskloom.hookimpl`` whose names are
hooks below, exposed through an entry point in the ``taskloom`` group::

    [project.entry-points.taskloom]
    acme = "taskloom_acme.plugin"

Hooks receive a *register* callable instead of returning values, so a plugin can register
several things, and so taskloom knows which package registered what. Hook specs only ever gain
optional parameters: a plugin written today keeps working. Every hook here is documented in
``docs/hooks.md`` (a test keeps the two in step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from taskloom.registry import (
        CommandRegister,
        ExecutorRegister,
        LLMRegister,
        SinkRegister,
        SourceRegister,
        StepRegister,
        TaskRegister,
    )

PROJECT = "taskloom"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_llms(register: LLMRegister) -> None:
    """Register LLM classes: ``register("acme", AcmeLLM, aliases=["acme-chat"])``.

    Each class must subclass :class:`taskloom.LLM` (or :class:`taskloom.AsyncLLM`). The name is
    what users pass to ``get_llm``; it must be unique across installed packages.
    """


@hookspec
def register_tasks(register: TaskRegister) -> None:
    """Register Task classes: ``register("my-task", MyTask)``.

    Each class must subclass :class:`taskloom.Task`. The name is what users pass to
    ``get_task``, and the default ``name`` of the task, which suffixes its metadata keys.
    """


@hookspec
def register_steps(register: StepRegister) -> None:
    """Register Step classes that are not tasks (column steps, filters): ``register("keep-columns", KeepColumns)``.

    Each class must subclass :class:`taskloom.Step`. Pipeline configs name steps by these names
    (tasks by their task names).
    """


@hookspec
def register_sources(register: SourceRegister) -> None:
    """Register pipeline sources: ``register("jsonl", JsonlSource)``.

    Each class must subclass :class:`taskloom.pipeline.Source` and yield rows lazily, in order.
    """


@hookspec
def register_sinks(register: SinkRegister) -> None:
    """Register pipeline sinks: ``register("parquet", ParquetSink)``.

    Each class must subclass :class:`taskloom.pipeline.Sink`; it receives each leaf step's rows in
    input order.
    """


@hookspec
def register_executors(register: ExecutorRegister) -> None:
    """Register executors, which decide where a pipeline's rows run: ``register(RayExecutor)``.

    Each class must subclass :class:`taskloom.plugin.PipelineExecutor` and implement
    ``run(pipeline, request) -> RunResult``; ``Pipeline.run(executor=NAME)`` and ``taskloom run
    --executor NAME`` pick it. Core's ``local`` executor is registered through this hook too.
    """


@hookspec
def register_commands(register: CommandRegister) -> None:
    """Register ``taskloom`` subcommands: ``register(PushCommand)`` makes ``taskloom push ...``.

    Each class must subclass :class:`taskloom.plugin.Command`, name itself with
    ``registry_name`` and implement ``run(args) -> int``. A name that a built-in command already
    has is refused (shown by ``taskloom plugins``); built-in commands are never shadowed.
    """
