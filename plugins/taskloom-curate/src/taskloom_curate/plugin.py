"""The ``curate`` entry point: registers the curation steps (their modules load when registered)."""

from __future__ import annotations

from taskloom.plugin import StepRegister, hookimpl


@hookimpl
def register_steps(register: StepRegister) -> None:
    from taskloom_curate.agreement import Agreement
    from taskloom_curate.dedup import Deduplicate
    from taskloom_curate.filtering import Filter
    from taskloom_curate.formats import FormatDPO, FormatKTO, FormatSFT

    register(Filter)
    register(Deduplicate)
    register(FormatSFT)
    register(FormatDPO)
    register(FormatKTO)
    register(Agreement)
