"""Core's own tasks and LLMs, registered through the same hooks as any plugin's."""

from __future__ import annotations

from taskloom.hookspecs import hookimpl
from taskloom.registry import LLMRegister, TaskRegister


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom.tasks.text_generation import ChatGeneration, TextGeneration

    register("text-generation", TextGeneration)
    register("chat-generation", ChatGeneration)


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM

    register("scripted", ScriptedLLM)
    register("scripted-async", ScriptedAsyncLLM)
