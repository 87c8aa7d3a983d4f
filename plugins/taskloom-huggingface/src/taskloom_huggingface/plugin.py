"""The hooks of ``huggingface``: an LLM, the ``hub`` sink, ``taskloom push``; they import only taskloom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import CommandRegister, LLMRegister, SinkRegister


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_huggingface.llm import HuggingFaceLLM

    register(HuggingFaceLLM)


@hookimpl
def register_sinks(register: SinkRegister) -> None:
    from taskloom_huggingface.sink import HubSink

    register(HubSink)


@hookimpl
def register_commands(register: CommandRegister) -> None:
    from taskloom_huggingface.commands import PushCommand

    register(PushCommand)
