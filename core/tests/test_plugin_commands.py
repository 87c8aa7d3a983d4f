"""Plugin subcommands through real entry points: ``taskloom <name>`` runs a plugin's Command."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from taskloom.cli import build_parser, main
from taskloom.registry import list_commands

COMMAND_PLUGIN = """
import taskloom
from taskloom.plugin import Command, TaskloomError

class Greet(Command):
    '''say hello to someone'''

    registry_name = "{name}"

    def add_arguments(self, parser):
        parser.add_argument("who")
        parser.add_argument("--fail", action="store_true")

    def run(self, args):
        if args.fail:
            raise TaskloomError("cannot greet " + args.who)
        print("hello " + args.who)
        return 7

@taskloom.hookimpl
def register_commands(register):
    register(Greet)
"""


def test_a_plugin_command_runs_with_its_arguments_and_exit_code(site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    site.install("acme-cli", {"acme": "acme_cli"}, {"acme_cli": COMMAND_PLUGIN.format(name="greet")})
    assert main(["greet", "world"]) == 7
    assert capsys.readouterr().out == "hello world\n"
    assert main(["greet", "world", "--fail"]) == 2  # a TaskloomError is reported like a built-in's
    assert "taskloom: error: cannot greet world" in capsys.readouterr().err
    assert list_commands()["greet"].__name__ == "Greet"


def test_plugin_commands_are_listed_in_help_and_not_loaded_for_builtins(
    site: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    site.install("acme-cli", {"acme": "acme_cli"}, {"acme_cli": COMMAND_PLUGIN.format(name="greet")})
    build_parser(["run", "pipeline.yaml"])
    assert "acme_cli" not in sys.modules  # a built-in command costs no plugin import
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "greet" in out and "say hello to someone" in out


def test_a_plugin_command_cannot_shadow_a_builtin(site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    site.install("acme-cli", {"acme": "acme_cli"}, {"acme_cli": COMMAND_PLUGIN.format(name="run")})
    site.install("other-cli", {"other": "other_cli"}, {"other_cli": COMMAND_PLUGIN.format(name="greet")})
    assert main(["greet", "you"]) == 7
    captured = capsys.readouterr()
    assert "acme-cli 1.0" in captured.err and "'run', which is built in" in captured.err
    assert captured.out == "hello you\n"


def test_an_unknown_command_lists_the_plugin_ones(site: Any, capsys: pytest.CaptureFixture[str]) -> None:
    site.install("acme-cli", {"acme": "acme_cli"}, {"acme_cli": COMMAND_PLUGIN.format(name="greet")})
    with pytest.raises(SystemExit) as exited:
        main(["gret"])
    assert exited.value.code == 2
    assert "'greet'" in capsys.readouterr().err


def test_a_command_that_is_not_a_command_class_fails_its_plugin_only(site: Any) -> None:
    bad = "import taskloom\n\n@taskloom.hookimpl\ndef register_commands(register):\n    register(dict)\n"
    site.install("bad-cli", {"bad": "bad_cli"}, {"bad_cli": bad})
    site.install("acme-cli", {"acme": "acme_cli"}, {"acme_cli": COMMAND_PLUGIN.format(name="greet")})
    assert "greet" in list_commands()
    assert main(["greet", "x"]) == 7
