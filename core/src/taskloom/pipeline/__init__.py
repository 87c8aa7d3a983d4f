"""Pipelines: a source, a DAG of steps, sinks; streamed on one event loop, cached, resumable.

Names are imported on first use, so ``import taskloom.pipeline`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom._lazy import lazy_getattr

if TYPE_CHECKING:
    from taskloom.pipeline.base import Sink, SinkWriter, Source, SourceError
    from taskloom.pipeline.executor import RunStats, StepStats
    from taskloom.pipeline.graph import Flow, PipelineError
    from taskloom.pipeline.pipeline import DryRunStep, Pipeline, RunResult

_LAZY = {
    "Sink": "taskloom.pipeline.base",
    "SinkWriter": "taskloom.pipeline.base",
    "Source": "taskloom.pipeline.base",
    "SourceError": "taskloom.pipeline.base",
    "RunStats": "taskloom.pipeline.executor",
    "StepStats": "taskloom.pipeline.executor",
    "Flow": "taskloom.pipeline.graph",
    "PipelineError": "taskloom.pipeline.graph",
    "DryRunStep": "taskloom.pipeline.pipeline",
    "Pipeline": "taskloom.pipeline.pipeline",
    "RunResult": "taskloom.pipeline.pipeline",
}

__all__ = [
    "DryRunStep",
    "Flow",
    "Pipeline",
    "PipelineError",
    "RunResult",
    "RunStats",
    "Sink",
    "SinkWriter",
    "Source",
    "SourceError",
    "StepStats",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
