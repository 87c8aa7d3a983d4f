"""Where a pipeline's rows run: the executor contract, and the local executor.

A run has two halves. The first is the same wherever the rows go: the runtime parameters are
applied, the source's first row is checked against every step's columns and a budget is checked
against the prices, all before any request. :meth:`Pipeline.run` does that half itself, so no
executor can skip it. The second half, which machines run the rows and how the answers come
back, belongs to an executor: ``local`` (one event loop in this process, the default) or one a
plugin registers through the ``register_executors`` hook (``taskloom-ray`` registers ``ray``).

An executor is a component, so its settings are validated fields (``get_executor("ray",
address="auto")``), and a pipeline file runs unchanged on any of them. Every executor runs the
same row recipe (:meth:`Step.work`), so the rows it makes are the local executor's rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from taskloom.component import Component
from taskloom.pipeline.base import Source

if TYPE_CHECKING:
    from taskloom.pipeline.budget import Budget
    from taskloom.pipeline.pipeline import Pipeline, Progress, RunResult


@dataclass(frozen=True)
class RunRequest:
    """What a caller asked of one run, after :meth:`Pipeline.run` checked it.

    ``source`` is the source to read (its first row already checked against the steps), and
    ``output`` the run folder (``out/<pipeline name>`` when the caller named none).
    """

    source: Source
    output: Path
    use_cache: bool = True
    progress: Progress | None = None
    progress_interval: float = 0.5
    budget_usd: float | None = None
    max_requests: int | None = None
    stop_grace: float = 5.0
    card: bool = True
    """Whether the run writes its dataset card; an executor running part of a run (a shard) leaves
    the card to the whole run."""
    budget: Budget | None = None
    """The budget to keep instead of one made from ``budget_usd`` and ``max_requests``: an executor
    running part of a run hands each part one that draws on the whole run's (a cluster's)."""

    def but(self, **changes: Any) -> RunRequest:
        """This request with some fields changed (a shard of it, say)."""
        return replace(self, **changes)


class PipelineExecutor(Component, ABC):
    """Runs the rows of a checked pipeline somewhere, and says how it went."""

    handles_budget: ClassVar[bool] = True
    """Whether ``budget_usd`` and ``max_requests`` hold for the run as a whole on this executor.

    An executor that cannot keep one limit over all of its workers says False, and a run with a
    limit is refused before any request rather than spending up to the limit once per worker.
    """

    @abstractmethod
    def run(self, pipeline: Pipeline, request: RunRequest) -> RunResult:
        """Run every row of ``request.source`` through ``pipeline`` into ``request.output``."""


class LocalExecutor(PipelineExecutor):
    """Every row streams through the steps on one event loop in this process (the default)."""

    registry_name: ClassVar[str | None] = "local"

    def run(self, pipeline: Pipeline, request: RunRequest) -> RunResult:
        return pipeline._run_local(request)


def executor_for(executor: str | PipelineExecutor | None, options: Mapping[str, Any] | None = None) -> PipelineExecutor:
    """``executor`` as an instance: a registered name (with ``options`` as its fields) or itself."""
    from taskloom.errors import TaskloomError

    if isinstance(executor, PipelineExecutor):
        if options:
            raise TaskloomError(
                f"executor options {sorted(options)} were given with an executor instance; "
                "set them on the instance instead."
            )
        return executor
    from taskloom.registry import get_executor

    return get_executor(executor or "local", **dict(options or {}))
