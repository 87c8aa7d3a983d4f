"""The ``report`` entry point: adds ``taskloom report``; plotly loads only when a report is built."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import CommandRegister


@hookimpl
def register_commands(register: CommandRegister) -> None:
    from taskloom_report.commands import ReportCommand

    register(ReportCommand)
