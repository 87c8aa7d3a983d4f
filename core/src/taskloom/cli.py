"""The ``taskloom`` command: what is installed, and (later) running pipelines.

Plain ``argparse`` and plain text, so the command starts fast and its output pipes cleanly;
``--json`` gives scripts a stable shape instead of a table to scrape.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskloom._version import __version__
from taskloom.errors import TaskloomError
from taskloom.text_table import format_table


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
            # Columns may depend on fields (a template's variables): use the defaults. Building a
            # task does no I/O (no default LLM is chosen), so this is cheap; a task with required
            # fields (a rubric's criteria) is shown with its defaults, unvalidated.
            fields = {"name": name} if cls.own_registry_name() is None else {}  # type: ignore[attr-defined]
            try:
                probe: Any = cls(**fields)
            except ValueError:
                probe = cls.model_construct(**fields)  # type: ignore[attr-defined]
            info["inputs"] = columns_as_dict(probe.inputs)
            info["outputs"] = columns_as_dict(probe.outputs)
        except Exception:
            info["inputs"] = info["outputs"] = None
        example = getattr(cls, "example", None)
        info["example"] = {"input": example[0], "output": example[1]} if example else None
    return info


def _task_parameters(cls: Any) -> list[dict[str, Any]]:
    """The fields a task adds to every task's own (llm, num_generations, ...), for ``taskloom tasks NAME``."""
    from taskloom.component import field_default
    from taskloom.tasks.base import Task

    own = [(name, field) for name, field in cls.model_fields.items() if name not in Task.model_fields]
    return [
        {
            "name": name,
            "required": field.is_required(),
            "default": field_default(field),
            "description": field.description or "",
        }
        for name, field in own
    ]


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _cmd_task_detail(name: str, args: argparse.Namespace) -> int:
    import inspect

    from taskloom.registry import get_task_class

    cls = get_task_class(name)
    info = _describe_class("task", name, cls)
    info["doc"] = inspect.getdoc(cls) or ""
    info["parameters"] = _task_parameters(cls)
    if args.json:
        print(json.dumps(info, indent=2, default=repr))
        return 0
    print(f"{name}  ({info['package']} {info['version']})\n")
    print(info["doc"] + "\n")
    print(f"Inputs:  {_columns(info['inputs'] or {})}")
    print(f"Outputs: {_columns(info['outputs'] or {})}")
    if info["parameters"]:
        rows = [
            [p["name"], "(required)" if p["required"] else _short(repr(p["default"])), p["description"]]
            for p in info["parameters"]
        ]
        print("\nParameters (besides llm, num_generations, group_generations, add_raw_output, add_raw_input):")
        print(format_table(rows, ["NAME", "DEFAULT", "DESCRIPTION"]))
    if info["example"]:
        print("\nExample")
        print(f"  in:  {json.dumps(info['example']['input'], ensure_ascii=False)}")
        print(f"  out: {json.dumps(info['example']['output'], ensure_ascii=False)}")
    return 0


def _cmd_llm_detail(name: str, args: argparse.Namespace) -> int:
    """One provider in full: its fields, its generation options with types, ranges and defaults."""
    import inspect

    from taskloom.llms.options import describe_field
    from taskloom.registry import get_llm_class

    cls = get_llm_class(name)
    info = _describe_class("llm", name, cls)
    info["doc"] = inspect.getdoc(cls) or ""
    info["fields"] = [
        {**describe_field(field_name, field), "required": field.is_required()}
        for field_name, field in cls.model_fields.items()
        if field_name != "generation_kwargs"
    ]
    info["options"] = cls.options_info()
    key_env = getattr(cls, "api_key_env", None)
    info["api_key_env"] = key_env
    if args.json:
        print(json.dumps(info, indent=2, default=repr))
        return 0
    print(f"{name}  ({info['package']} {info['version']})\n")
    print(info["doc"] + "\n")
    if key_env:
        print(f"Key: ${key_env} (or api_key=...)\n")
    print("Fields:")
    rows = [
        [f["name"], f["type"], "(required)" if f["required"] else _short(repr(f["default"]), 24), f["description"]]
        for f in info["fields"]
    ]
    print(format_table(rows, ["NAME", "TYPE", "DEFAULT", "DESCRIPTION"]))
    print("\nGeneration options (generation_kwargs, or --set STEP.llm.generation_kwargs.NAME=VALUE):")
    rows = [
        [o["name"], o["type"], o["range"] or "-", _short(repr(o["default"]), 24), o["description"]]
        for o in info["options"]
    ]
    print(format_table(rows, ["OPTION", "TYPE", "RANGE", "DEFAULT", "DESCRIPTION"]))
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from taskloom.registry import list_plugins

    records = list_plugins()
    if args.json:
        print(json.dumps([vars(r) for r in records], indent=2))
        return 0
    rows = [[r.name, r.package, r.version, r.status, ", ".join(r.registered) or "-"] for r in records]
    print(format_table(rows, ["PLUGIN", "PACKAGE", "VERSION", "STATUS", "REGISTERS"]))
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
        print(format_table(rows, ["TASK", "PACKAGE", "INPUTS", "OUTPUTS", "DESCRIPTION"]))
        print("\n(? marks an optional column; `taskloom tasks NAME` shows one task in full, with an example row)")
    else:
        rows = [[d["name"], d["package"], d["description"]] for d in described]
        print(format_table(rows, ["LLM", "PACKAGE", "DESCRIPTION"]))
        print(f"\nDefault LLM: {_default_llm_line()}")
        print("(`taskloom llms NAME` shows one provider in full: its fields and generation options)")
    return 0


def _default_llm_line() -> str:
    from taskloom.config import default_llm_choice

    try:
        choice = default_llm_choice()
    except TaskloomError as error:
        return f"none ({str(error).splitlines()[0]} See `taskloom config`.)"
    return f"{choice.spec!r} from {choice.source}"


def _cmd_config(args: argparse.Namespace) -> int:
    from taskloom.config import DEFAULT_LLM_ENV, config_path, default_llm_choice

    path = config_path()
    info: dict[str, Any] = {"config_file": str(path), "config_file_exists": path.is_file()}
    try:
        choice = default_llm_choice()
        info["default_llm"] = {"spec": choice.spec, "source": choice.source}
    except TaskloomError as error:
        info["default_llm"] = None
        info["default_llm_error"] = str(error)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"Config file: {path}" + ("" if info["config_file_exists"] else " (not present)"))
    if info["default_llm"] is None:
        print(f"Default LLM: none\n{info['default_llm_error']}")
    else:
        print(f"Default LLM: {choice.spec!r}, from {choice.source}")
        print(f"(${DEFAULT_LLM_ENV} overrides the config file; --llm overrides both for one command.)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from taskloom.config import ConfigError, default_llm, llm_from_spec
    from taskloom.registry import get_task
    from taskloom.tasks.base import row_errors

    llm = llm_from_spec(args.llm) if args.llm else default_llm()
    asked = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}
    try:
        llm.set_runtime_parameters({"generation_kwargs": {k: v for k, v in asked.items() if v is not None}})
    except ValueError as error:  # an option this LLM does not take: say so rather than ignore it
        raise ConfigError(str(error)) from None
    fields: dict[str, Any] = {"llm": llm, "num_generations": args.num_generations, "group_generations": True}
    if args.system_prompt:
        fields["system_prompt"] = args.system_prompt
    task = get_task("text-generation", **fields)
    task.load()
    try:
        rows = next(task.process([{"instruction": text} for text in args.instructions]))
    finally:
        task.unload()
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    failed = 0
    for row in rows:
        print(f"> {row['instruction']}")
        for generation in row["generation"]:
            print(generation if generation is not None else "(no answer)")
        errors = row_errors(row, task.name)
        if errors:
            failed += 1
            print("(failed: " + "; ".join(sorted(errors)) + ")")
        print()
    print(f"model: {rows[0]['model_name'] if rows else llm.model_name}", file=sys.stderr)
    return 1 if failed else 0


def _load(args: argparse.Namespace) -> Any:
    from taskloom.pipeline.config import load_pipeline

    return load_pipeline(args.pipeline, getattr(args, "set", None) or ())


def _cmd_validate(args: argparse.Namespace) -> int:
    config = _load(args)
    config.pipeline.validate(config.parameters)
    described = config.pipeline.describe()
    print(
        f"{args.pipeline}: ok. {len(described['steps'])} steps, source {described['source']}, "
        f"columns checked from its first row; no LLM was called."
    )
    reads = config.pipeline.reads()
    if args.rows > 0 and reads is not None:
        import itertools

        shown = list(itertools.islice(reads.rows(), args.rows))
        print(f"first {len(shown)} source row{'' if len(shown) == 1 else 's'}:")
        for index, row in enumerate(shown):
            print(f"  {index}: {_compact_row(row)}")
    if args.estimate:
        _print_estimate(config, args)
    return 0


def _compact_row(row: dict[str, Any], width: int = 80) -> str:
    """A row on one line: JSON, with every string longer than ``width`` cut to its start and an ellipsis."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > width:
            return value[: width - 3] + "..."
        if isinstance(value, dict):
            return {key: cut(item) for key, item in value.items()}
        if isinstance(value, list):
            return [cut(item) for item in value]
        return value

    return json.dumps(cut(row), ensure_ascii=False, default=str)


def _print_estimate(config: Any, args: argparse.Namespace) -> None:
    from taskloom.pricing import PRICES_DATE

    forecast = config.pipeline.estimate(config.parameters, sample=args.sample)
    if getattr(args, "json", False):
        print(json.dumps(forecast.as_dict(), indent=2))
        return
    print(forecast.table())
    print(f"(prices: the pipeline's and config file's own, then the shipped table of {PRICES_DATE}; no LLM was called)")


def _cmd_show(args: argparse.Namespace) -> int:
    config = _load(args)
    config.pipeline.set_parameters(config.parameters)
    described = config.pipeline.describe()
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    print(f"pipeline {described['name']}: source {described['source']}")
    if described["source_columns"] is not None:
        print(f"  source columns: {', '.join(described['source_columns'])}")
    for step in described["steps"]:
        after = f" after {', '.join(step['after'])}" if step["after"] else " (reads the source)"
        join = ", joins its branches" if step["join"] else ""
        print(f"\n{step['name']} [{step['type']}]{after}{join}")
        print(f"  inputs:  {_columns(step['inputs']) or '-'}")
        print(f"  outputs: {_columns(step['outputs']) or '-'}")
        if "produces" in step:
            print(f"  rows after it: {', '.join(step['produces'])}")
        for line in _parameter_lines(step["runtime_parameters"], "  "):
            print(line)
    print(f"\nleaf steps (written out): {', '.join(described['leaves'])}; sinks: {', '.join(described['sinks'])}")
    return 0


def _parameter_lines(info: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for entry in info:
        if "runtime_parameters_info" in entry:
            lines.append(f"{indent}{entry['name']}:")
            lines += _parameter_lines(entry["runtime_parameters_info"], indent + "  ")
            continue
        value = entry.get("value", entry.get("default"))  # as configured, else the default
        shown = f" = {value!r}" if value not in (None, {}, []) else ""
        lines.append(f"{indent}{entry['name']}{shown}: {entry.get('description', '')}".rstrip())
        for key in entry.get("keys", []):
            lines.append(f"{indent}  .{key['name']}: {key.get('description', '')}".rstrip())
    return lines


def _cmd_run(args: argparse.Namespace) -> int:
    from taskloom.pipeline.progress import choose_progress, summary_table

    config = _load(args)
    pipeline = config.pipeline
    if args.dry_run:
        for step in pipeline.dry_run(config.parameters):
            print(f"== {step.name}")
            for chat in step.formatted:
                print(json.dumps(chat, indent=2, ensure_ascii=False))
            for row in step.outputs:
                print(json.dumps(row, ensure_ascii=False, default=str))
        print("(dry run: nothing was cached or written)")
        return 0
    if args.estimate:
        _print_estimate(config, args)
        return 0
    from taskloom.errors import BudgetExceededError, JudgeUnreadableError, RunInterrupted

    output = args.output or config.output
    executor = _executor(args)
    try:
        result = pipeline.run(
            config.parameters,
            output=output,
            use_cache=not args.no_cache,
            progress=choose_progress(args.progress),
            budget_usd=args.budget_usd,
            max_requests=args.max_requests,
            executor=executor,
        )
    except RunInterrupted as stop:
        print(f"taskloom: {stop}", file=sys.stderr)
        return 130
    except (BudgetExceededError, JudgeUnreadableError) as stop:
        if stop.result is not None:
            print(summary_table(stop.result.stats))  # type: ignore[attr-defined]
        print(f"taskloom: {stop}", file=sys.stderr)
        return 3
    print(summary_table(result.stats))
    for leaf, path in result.files.items():
        print(f"\n{leaf}: {path}")
        print(_preview(result.rows(leaf)))
    for name, made in result.sinks.items():
        if name != "jsonl" and made is not None:
            print(f"{name}: {made}")
    print(f"\noutput folder: {result.output_dir} (run the same command again to resume; --no-cache to redo)")
    if args.report:
        print(f"report: {_write_report(result.output_dir)}")
    return 0


def _write_report(run_dir: Path) -> Path:
    """The run's report page written into its folder, by the ``taskloom-report`` plugin (never imported before)."""
    from taskloom.errors import KNOWN_PACKAGES, TaskloomError

    try:
        from taskloom_report import write_report
    except ImportError as error:
        package = KNOWN_PACKAGES["report"]
        raise TaskloomError(
            f"--report needs the {package} package: pip install {package} (the run itself is done and kept)."
        ) from error
    return write_report(run_dir)


def _executor(args: argparse.Namespace) -> Any:
    """The executor ``--executor`` names, with ``--address`` as its field when it has one."""
    from taskloom.errors import TaskloomError
    from taskloom.pipeline.executors import PipelineExecutor
    from taskloom.registry import get_executor, get_registry

    name = args.executor or "local"
    cls: type[PipelineExecutor] = get_registry().resolve("executor", name).cls
    options: dict[str, Any] = {}
    if args.address is not None:
        if "address" not in cls.model_fields:
            raise TaskloomError(
                f"--address is for an executor that connects to a cluster (such as ray); the {name!r} executor "
                "takes none."
            )
        options["address"] = args.address
    return get_executor(name, **options)


def _preview(rows: Any, limit: int = 5, width: int = 40) -> str:
    """The first rows as a small table, metadata left out and long cells cut."""
    from taskloom.tasks.base import METADATA

    shown = [row for _, row in zip(range(limit), rows, strict=False)]
    if not shown:
        return "(no rows)"
    columns = [c for c in shown[0] if c != METADATA]

    def cell(value: Any) -> str:
        text = " ".join(str("-" if value is None else value).split())
        return text if len(text) <= width else text[: width - 3] + "..."

    table = format_table([[cell(row.get(c)) for c in columns] for row in shown], columns)
    return table


def _cmd_agreement(args: argparse.Namespace) -> int:
    from taskloom.agreement import agreement_in_run

    result = agreement_in_run(args.run_dir, args.judge, args.human, args.leaf)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['leaf']}: {args.judge!r} against {args.human!r}, {result['rows']} rows "
        f"({result['left_out']} left out: a value missing), compared as {result['kind']}"
    )
    metrics = [k for k in ("accuracy", "cohen_kappa", "spearman", "kendall") if k in result]
    rows = []
    for name in metrics:
        low, high = result[name]["ci95"]
        rows.append([name, f"{result[name]['value']:.3f}", f"[{low:.3f}, {high:.3f}]"])
    print(format_table(rows, ["METRIC", "VALUE", "95% CI (bootstrap)"]))
    return 0


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The built-in commands, plus the plugins' when ``argv`` asks for one that is not built in (or for help)."""
    parser = argparse.ArgumentParser(prog="taskloom", description="Generate and judge data with LLMs.")
    parser.add_argument("--version", action="version", version=f"taskloom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    plugins = commands.add_parser("plugins", help="installed plugins, what they register, load errors")
    plugins.add_argument("--json", action="store_true", help="print JSON for scripts")
    plugins.set_defaults(run=_cmd_plugins)

    tasks = commands.add_parser("tasks", help="installed tasks with their inputs and outputs")
    tasks.add_argument("name", nargs="?", help="show one task in full: description, parameters, an example row")
    tasks.add_argument("--json", action="store_true", help="print JSON for scripts")
    tasks.set_defaults(run=lambda a: _cmd_task_detail(a.name, a) if a.name else _cmd_list("task", a))

    llms = commands.add_parser("llms", help="installed LLM providers")
    llms.add_argument("name", nargs="?", help="show one provider in full: fields, options, defaults")
    llms.add_argument("--json", action="store_true", help="print JSON for scripts")
    llms.set_defaults(run=lambda a: _cmd_llm_detail(a.name, a) if a.name else _cmd_list("llm", a))

    config = commands.add_parser("config", help="the config file and the default LLM, with where it comes from")
    config.add_argument("--json", action="store_true", help="print JSON for scripts")
    config.set_defaults(run=_cmd_config)

    generate = commands.add_parser(
        "generate", help="answer instructions with text-generation (the default LLM unless --llm names one)"
    )
    generate.add_argument("instructions", nargs="+", metavar="INSTRUCTION")
    generate.add_argument("--llm", help="an LLM spec such as 'llamacpp' or 'openai:gpt-4o-mini'")
    generate.add_argument("--system-prompt", help="a system message for every instruction")
    generate.add_argument("-n", "--num-generations", type=int, default=1, help="answers per instruction")
    generate.add_argument("--max-new-tokens", type=int, help="most tokens per answer")
    generate.add_argument("--temperature", type=float, help="sampling temperature")
    generate.add_argument("--seed", type=int, help="seed for reproducible sampling")
    generate.add_argument("--json", action="store_true", help="print one JSON row per instruction")
    generate.set_defaults(run=_cmd_generate)

    run = commands.add_parser("run", help="run a pipeline file (resumes from the cache in its output folder)")
    run.add_argument("pipeline", help="a pipeline YAML file")
    run.add_argument("--set", action="append", metavar="STEP.PARAM=VALUE", help="a runtime parameter; repeatable")
    run.add_argument("--output", help="output folder (default: the file's `output`, else out/<name>)")
    run.add_argument("--dry-run", action="store_true", help="one row through every step; nothing cached or written")
    run.add_argument("--no-cache", action="store_true", help="ask the LLMs again instead of using the cache")
    run.add_argument("--progress", choices=["auto", "rich", "log", "none"], default="auto")
    run.add_argument(
        "--budget-usd", type=float, metavar="DOLLARS", help="stop before a request could take this run's spend past it"
    )
    run.add_argument("--max-requests", type=int, metavar="N", help="stop before starting request N+1")
    run.add_argument(
        "--estimate", action="store_true", help="forecast requests, tokens and dollars per step; nothing is run"
    )
    run.add_argument("--sample", type=int, default=20, help="source rows the estimate formats (default 20)")
    run.add_argument("--json", action="store_true", help="with --estimate: print JSON for scripts")
    run.add_argument(
        "--report", action="store_true", help="write report.html into the run folder at the end (taskloom-report)"
    )
    run.add_argument(
        "--executor", metavar="NAME", help="where the rows run: local (default) or an installed executor such as ray"
    )
    run.add_argument(
        "--address", metavar="auto|HOST:PORT", help="the cluster an executor joins (ray: default, a local cluster)"
    )
    run.set_defaults(run=_cmd_run)

    show = commands.add_parser("show", help="a pipeline's steps, columns and runtime parameters")
    show.add_argument("pipeline")
    show.add_argument("--set", action="append", metavar="STEP.PARAM=VALUE")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(run=_cmd_show)

    agreement = commands.add_parser(
        "agreement", help="how well a judge's column agrees with human labels in a run's output"
    )
    agreement.add_argument("run_dir", help="a run folder")
    agreement.add_argument("--judge", required=True, metavar="COLUMN", help="the judge's column (verdict, score)")
    agreement.add_argument("--human", required=True, metavar="COLUMN", help="the human labels' column")
    agreement.add_argument("--leaf", help="the leaf step to read, when the run has several")
    agreement.add_argument("--json", action="store_true", help="print JSON for scripts")
    agreement.set_defaults(run=_cmd_agreement)

    validate = commands.add_parser("validate", help="check a pipeline file without calling any LLM")
    validate.add_argument("pipeline")
    validate.add_argument("--set", action="append", metavar="STEP.PARAM=VALUE")
    validate.add_argument("--estimate", action="store_true", help="also forecast requests, tokens and dollars per step")
    validate.add_argument("--sample", type=int, default=20, help="source rows the estimate formats (default 20)")
    validate.add_argument("--json", action="store_true", help="with --estimate: print the forecast as JSON")
    validate.add_argument(
        "--rows", type=int, default=3, metavar="N", help="show the source's first N rows (default 3; 0 for none)"
    )
    validate.set_defaults(run=_cmd_validate)
    if _wants_plugin_commands(argv, set(commands.choices)):
        _add_plugin_commands(commands)
    return parser


def _wants_plugin_commands(argv: Sequence[str], builtins: set[str]) -> bool:
    """Whether to load the plugins' commands: only for one not built in, or to list them all."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    if first is None:
        return not argv or "-h" in argv or "--help" in argv
    return first not in builtins


def _add_plugin_commands(commands: Any) -> None:
    from taskloom.registry import get_registry

    builtins = set(commands.choices)
    for registration in get_registry().registrations("command"):
        if registration.name in builtins:
            print(
                f"taskloom: warning: {registration.origin()} registers the command {registration.name!r}, "
                "which is built in; the built-in one is kept.",
                file=sys.stderr,
            )
            continue
        try:
            command = registration.cls()
            sub = commands.add_parser(registration.name, help=registration.description)
            command.add_arguments(sub)
        except Exception as error:  # one broken command must not take the others down
            commands.choices.pop(registration.name, None)
            print(
                f"taskloom: warning: the command {registration.name!r} of {registration.origin()} "
                f"cannot be set up: {error}",
                file=sys.stderr,
            )
            continue
        sub.set_defaults(run=command.run)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        code: int = args.run(args)
    except TaskloomError as error:
        print(f"taskloom: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `taskloom ... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
