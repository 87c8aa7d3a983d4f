"""Everything a plugin author needs, from one module: ``from taskloom.plugin import ...``.

A provider, a task pack or a step package imports from here (or from ``taskloom`` itself) and
from nowhere else in core, so core's modules can move without breaking a plugin. The names are
imported on first use, so importing this module costs nothing.

    from taskloom.plugin import GenerationOptions, HTTPLLM, Reply, hookimpl

Hook implementations receive typed register objects (``LLMRegister``, ``TaskRegister``...); call
``register(MyClass)``: the name is the class's ``registry_name``, written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom._lazy import lazy_getattr

if TYPE_CHECKING:
    from taskloom.agreement import agreement_in_run, measure_agreement
    from taskloom.commands import Command
    from taskloom.component import Component, RuntimeParameter
    from taskloom.errors import (
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        GenerationError,
        MissingColumnError,
        OverloadedError,
        QuotaExceededError,
        RateLimitError,
        RequestTimeoutError,
        RetryableError,
        RowInputError,
        RunInterrupted,
        ServerError,
        TaskloomError,
    )
    from taskloom.hookspecs import hookimpl
    from taskloom.images import ImageData, image_data, image_part, image_parts, inline_images
    from taskloom.judging import JudgeStatistics, ScoreStatistics, VerdictStatistics
    from taskloom.llms.async_llm import AsyncLLM, failed_output
    from taskloom.llms.base import LLM
    from taskloom.llms.http import HTTPLLM, Reply, error_for_status, redact, retry_after
    from taskloom.llms.inputs import chat_messages, text_of
    from taskloom.llms.limits import Allowance, Bucket
    from taskloom.llms.options import GenerationOptions, OptionError, OutputSchema, json_schema_of
    from taskloom.llms.outputs import split_evenly, token_counts
    from taskloom.llms.tools import decoded_arguments, tool_calls_text
    from taskloom.pipeline.base import Sink, SinkWriter, Source, SourceError
    from taskloom.pipeline.budget import Budget
    from taskloom.pipeline.cache import CACHE_FILENAME
    from taskloom.pipeline.card import CARD_FILENAME
    from taskloom.pipeline.executor import RunStats, StepStats
    from taskloom.pipeline.executors import LocalExecutor, PipelineExecutor, RunRequest
    from taskloom.pipeline.graph import Flow
    from taskloom.pipeline.pipeline import Pipeline, RunResult
    from taskloom.pipeline.run_folder import RunFolder, RunFolderError
    from taskloom.pipeline.sinks import write_parquet
    from taskloom.registry import (
        CommandRegister,
        ExecutorRegister,
        LLMRegister,
        SinkRegister,
        SourceRegister,
        StepRegister,
        TaskRegister,
        get_sink,
        get_source,
    )
    from taskloom.steps import JoinStep, Step, StepColumns, columns_as_dict
    from taskloom.tasks.base import METADATA, Task, row_errors
    from taskloom.templates import compile_template, template_variables
    from taskloom.typing import (
        Chat,
        ChatMessage,
        ChatType,
        ContentPart,
        GenerateOutput,
        ImagePart,
        Row,
        Statistics,
        TextPart,
    )
    from taskloom.work import Call, CallPlan

_LAZY = {
    "Command": "taskloom.commands",
    "Component": "taskloom.component",
    "RuntimeParameter": "taskloom.component",
    "AuthenticationError": "taskloom.errors",
    "BadRequestError": "taskloom.errors",
    "GenerationError": "taskloom.errors",
    "MissingColumnError": "taskloom.errors",
    "OverloadedError": "taskloom.errors",
    "QuotaExceededError": "taskloom.errors",
    "RateLimitError": "taskloom.errors",
    "RequestTimeoutError": "taskloom.errors",
    "RetryableError": "taskloom.errors",
    "ServerError": "taskloom.errors",
    "TaskloomError": "taskloom.errors",
    "RunInterrupted": "taskloom.errors",
    "BudgetExceededError": "taskloom.errors",
    "hookimpl": "taskloom.hookspecs",
    "agreement_in_run": "taskloom.agreement",
    "measure_agreement": "taskloom.agreement",
    "JudgeStatistics": "taskloom.judging",
    "ScoreStatistics": "taskloom.judging",
    "VerdictStatistics": "taskloom.judging",
    "AsyncLLM": "taskloom.llms.async_llm",
    "failed_output": "taskloom.llms.async_llm",
    "LLM": "taskloom.llms.base",
    "HTTPLLM": "taskloom.llms.http",
    "Allowance": "taskloom.llms.limits",
    "Bucket": "taskloom.llms.limits",
    "Reply": "taskloom.llms.http",
    "error_for_status": "taskloom.llms.http",
    "redact": "taskloom.llms.http",
    "retry_after": "taskloom.llms.http",
    "GenerationOptions": "taskloom.llms.options",
    "OptionError": "taskloom.llms.options",
    "OutputSchema": "taskloom.llms.options",
    "json_schema_of": "taskloom.llms.options",
    "split_evenly": "taskloom.llms.outputs",
    "token_counts": "taskloom.llms.outputs",
    "Sink": "taskloom.pipeline.base",
    "SinkWriter": "taskloom.pipeline.base",
    "Source": "taskloom.pipeline.base",
    "SourceError": "taskloom.pipeline.base",
    "Budget": "taskloom.pipeline.budget",
    "CACHE_FILENAME": "taskloom.pipeline.cache",
    "CARD_FILENAME": "taskloom.pipeline.card",
    "RunStats": "taskloom.pipeline.executor",
    "StepStats": "taskloom.pipeline.executor",
    "LocalExecutor": "taskloom.pipeline.executors",
    "PipelineExecutor": "taskloom.pipeline.executors",
    "RunRequest": "taskloom.pipeline.executors",
    "Flow": "taskloom.pipeline.graph",
    "Pipeline": "taskloom.pipeline.pipeline",
    "RunResult": "taskloom.pipeline.pipeline",
    "RunFolder": "taskloom.pipeline.run_folder",
    "RunFolderError": "taskloom.pipeline.run_folder",
    "get_sink": "taskloom.registry",
    "get_source": "taskloom.registry",
    "write_parquet": "taskloom.pipeline.sinks",
    "CommandRegister": "taskloom.registry",
    "ExecutorRegister": "taskloom.registry",
    "LLMRegister": "taskloom.registry",
    "SinkRegister": "taskloom.registry",
    "SourceRegister": "taskloom.registry",
    "StepRegister": "taskloom.registry",
    "TaskRegister": "taskloom.registry",
    "JoinStep": "taskloom.steps",
    "Step": "taskloom.steps",
    "StepColumns": "taskloom.steps",
    "columns_as_dict": "taskloom.steps",
    "METADATA": "taskloom.tasks.base",
    "Task": "taskloom.tasks.base",
    "row_errors": "taskloom.tasks.base",
    "compile_template": "taskloom.templates",
    "template_variables": "taskloom.templates",
    "Chat": "taskloom.typing",
    "ChatMessage": "taskloom.typing",
    "ChatType": "taskloom.typing",
    "ContentPart": "taskloom.typing",
    "ImagePart": "taskloom.typing",
    "TextPart": "taskloom.typing",
    "RowInputError": "taskloom.errors",
    "chat_messages": "taskloom.llms.inputs",
    "ImageData": "taskloom.images",
    "image_data": "taskloom.images",
    "image_part": "taskloom.images",
    "image_parts": "taskloom.images",
    "inline_images": "taskloom.images",
    "text_of": "taskloom.llms.inputs",
    "decoded_arguments": "taskloom.llms.tools",
    "tool_calls_text": "taskloom.llms.tools",
    "GenerateOutput": "taskloom.typing",
    "Row": "taskloom.typing",
    "Statistics": "taskloom.typing",
    "Call": "taskloom.work",
    "CallPlan": "taskloom.work",
}

__all__ = [
    "CACHE_FILENAME",
    "CARD_FILENAME",
    "HTTPLLM",
    "LLM",
    "METADATA",
    "Allowance",
    "AsyncLLM",
    "AuthenticationError",
    "BadRequestError",
    "Bucket",
    "Budget",
    "BudgetExceededError",
    "Call",
    "CallPlan",
    "Chat",
    "ChatMessage",
    "ChatType",
    "Command",
    "CommandRegister",
    "Component",
    "ContentPart",
    "ExecutorRegister",
    "Flow",
    "GenerateOutput",
    "GenerationError",
    "GenerationOptions",
    "ImageData",
    "ImagePart",
    "JoinStep",
    "JudgeStatistics",
    "LLMRegister",
    "LocalExecutor",
    "MissingColumnError",
    "OptionError",
    "OutputSchema",
    "OverloadedError",
    "Pipeline",
    "PipelineExecutor",
    "QuotaExceededError",
    "RateLimitError",
    "Reply",
    "RequestTimeoutError",
    "RetryableError",
    "Row",
    "RowInputError",
    "RunFolder",
    "RunFolderError",
    "RunInterrupted",
    "RunRequest",
    "RunResult",
    "RunStats",
    "RuntimeParameter",
    "ScoreStatistics",
    "ServerError",
    "Sink",
    "SinkRegister",
    "SinkWriter",
    "Source",
    "SourceError",
    "SourceRegister",
    "Statistics",
    "Step",
    "StepColumns",
    "StepRegister",
    "StepStats",
    "Task",
    "TaskRegister",
    "TaskloomError",
    "TextPart",
    "VerdictStatistics",
    "agreement_in_run",
    "chat_messages",
    "columns_as_dict",
    "compile_template",
    "decoded_arguments",
    "error_for_status",
    "failed_output",
    "get_sink",
    "get_source",
    "hookimpl",
    "image_data",
    "image_part",
    "image_parts",
    "inline_images",
    "json_schema_of",
    "measure_agreement",
    "redact",
    "retry_after",
    "row_errors",
    "split_evenly",
    "template_variables",
    "text_of",
    "token_counts",
    "tool_calls_text",
    "write_parquet",
]

__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return __all__
