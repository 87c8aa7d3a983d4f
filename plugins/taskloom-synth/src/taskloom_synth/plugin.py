"""The ``synth`` entry point: registers the pack's tasks and sources (their modules load on first use)."""

from __future__ import annotations

from taskloom.plugin import SourceRegister, TaskRegister, hookimpl


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom_synth.conversation import Conversation
    from taskloom_synth.magpie import Magpie

    register(Magpie)
    register(Conversation)

    from taskloom_synth.function_calling import FunctionCalling

    register(FunctionCalling)


@hookimpl
def register_sources(register: SourceRegister) -> None:
    from taskloom_synth.sampler import SamplerSource

    register(SamplerSource)
