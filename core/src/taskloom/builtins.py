"""Core's own tasks, LLMs, steps, sources and sinks, registered through the same hooks as any plugin's."""

from __future__ import annotations

from taskloom.hookspecs import hookimpl
from taskloom.registry import ExecutorRegister, LLMRegister, SinkRegister, SourceRegister, StepRegister, TaskRegister


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom.tasks.text_generation import ChatGeneration, StructuredGeneration, TextGeneration

    register(TextGeneration)
    register(ChatGeneration)
    register(StructuredGeneration)


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom.llms.fallback import FallbackLLM
    from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM

    register(FallbackLLM)
    register(ScriptedLLM)
    register(ScriptedAsyncLLM)


@hookimpl
def register_steps(register: StepRegister) -> None:
    from taskloom.pipeline.columns import CombineColumns, GroupColumns, KeepColumns, RenameColumns

    register(KeepColumns)
    register(RenameColumns)
    register(CombineColumns)
    register(GroupColumns)


@hookimpl
def register_sources(register: SourceRegister) -> None:
    from taskloom.pipeline.sources import CsvSource, DatasetSource, JsonlSource, ParquetSource, RowsSource

    register(RowsSource)
    register(JsonlSource)
    register(CsvSource)
    register(ParquetSource)
    register(DatasetSource)


@hookimpl
def register_sinks(register: SinkRegister) -> None:
    from taskloom.pipeline.sinks import DatasetSink, JsonlSink, ParquetSink

    register(JsonlSink)
    register(ParquetSink)
    register(DatasetSink)


@hookimpl
def register_executors(register: ExecutorRegister) -> None:
    from taskloom.pipeline.executors import LocalExecutor

    register(LocalExecutor)
