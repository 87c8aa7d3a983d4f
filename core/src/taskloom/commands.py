"""Subcommands a plugin adds to ``taskloom``: the :class:`Command` contract.

A plugin that owns a service (the Hub, a cluster) often has an action that is not a step of a
pipeline: push a finished run, submit a job. Rather than ship a second console script, it
registers a command through the ``register_commands`` hook, and ``taskloom <name>`` runs it with
the same error handling, exit codes and ``taskloom plugins`` listing as the built-in commands.
Plugin commands are looked up only when the command asked for is not a built-in one (or for
``taskloom --help``), so they cost the built-in commands nothing at start-up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # argparse costs a run 2-3 ms of start-up; only the CLI needs it
    import argparse


class Command(ABC):
    """A ``taskloom`` subcommand: its arguments and what it does.

    The first paragraph of the class docstring is its one-line help in ``taskloom --help``.
    ``run`` returns the exit code; raising :class:`taskloom.TaskloomError` prints
    ``taskloom: error: <message>`` and exits 2, as for every built-in command.
    """

    registry_name: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments on its own parser (none by default)."""

    @abstractmethod
    def run(self, args: argparse.Namespace) -> int:
        """Do the work with the parsed arguments; the process's exit code."""


__all__ = ["Command"]
