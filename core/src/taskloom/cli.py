"""The ``taskloom`` command: what is installed, and (later) running pipelines.

Plain ``argparse`` and plain text, so the command starts fast and its output pipes cleanly;
``--json`` gives scripts a stable shape instead of a table to scrape.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from taskloom._version import __version__


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _columns(columns: dict[str, bool]) -> str:
    return ", ".join(name if required else f"{name}?" for name, required in columns.items())


def _describe_class(kind: str, name: str, cls: type) -> dict[str, Any]:
    """Inputs and outputs of a class, read from an instance built without validation."""
    from taskloom.registry import get_registry
    from taskloom.steps import columns_as_dict

    registration = get_registry().resolve("llm" if kind == "llm" else "task", name)
    info: dict[str, Any] = {
        "name": name,
        "package": registration.package,
        "version": registration.version,
        "description": registration.description,
        "aliases": list(registration.aliases),
    }
    if kind == "task":
        try:
            # Columns may depend on fields (a template's variables): use the defaults.
            probe: Any = cls.model_construct()  # type: ignore[attr-defined]
            probe.__dict__.setdefault("name", name)
            info["inputs"] = columns_as_dict(probe.inputs)
            info["outputs"] = columns_as_dict(probe.outputs)
        except Exception:
            info["inputs"] = info["outputs"] = None
    return info


def _cmd_plugins(args: argparse.Namespace) -> int:
    from taskloom.registry import list_plugins

    records = list_plugins()
    if args.json:
        print(json.dumps([vars(r) for r in records], indent=2))
        return 0
    rows = [[r.name, r.package, r.version, r.status, ", ".join(r.registered) or "-"] for r in records]
    print(_table(rows, ["PLUGIN", "PACKAGE", "VERSION", "STATUS", "REGISTERS"]))
    failed = [r for r in records if r.error]
    for record in failed:
        print(f"\n{record.label()} failed to load:\n  {record.error}", file=sys.stdout)
    return 0


def _cmd_list(kind: str, args: argparse.Namespace) -> int:
    from taskloom.registry import list_llms, list_tasks

    classes: dict[str, type] = dict(list_tasks() if kind == "task" else list_llms())
    described = [_describe_class(kind, name, cls) for name, cls in classes.items()]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    if kind == "task":
        rows = [
            [d["name"], d["package"], _columns(d["inputs"] or {}), _columns(d["outputs"] or {}), d["description"]]
            for d in described
        ]
        print(_table(rows, ["TASK", "PACKAGE", "INPUTS", "OUTPUTS", "DESCRIPTION"]))
        print("\n(? marks an optional column)")
    else:
        rows = [[d["name"], d["package"], d["description"]] for d in described]
        print(_table(rows, ["LLM", "PACKAGE", "DESCRIPTION"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskloom", description="Generate and judge data with LLMs.")
    parser.add_argument("--version", action="version", version=f"taskloom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    plugins = commands.add_parser("plugins", help="installed plugins, what they register, load errors")
    plugins.add_argument("--json", action="store_true", help="print JSON for scripts")
    plugins.set_defaults(run=_cmd_plugins)

    tasks = commands.add_parser("tasks", help="installed tasks with their inputs and outputs")
    tasks.add_argument("--json", action="store_true", help="print JSON for scripts")
    tasks.set_defaults(run=lambda a: _cmd_list("task", a))

    llms = commands.add_parser("llms", help="installed LLM providers")
    llms.add_argument("--json", action="store_true", help="print JSON for scripts")
    llms.set_defaults(run=lambda a: _cmd_list("llm", a))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from taskloom.errors import TaskloomError

    try:
        code: int = args.run(args)
    except TaskloomError as error:
        print(f"taskloom: error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
