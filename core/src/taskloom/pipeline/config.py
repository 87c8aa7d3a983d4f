"""Pipelines as YAML files: a source, steps by registry name with their fields, LLMs by spec, sinks.

    name: answers
    source: {type: jsonl, path: instructions.jsonl}     # relative to this file
    output: out/answers                                 # relative to where `taskloom run` runs
    steps:
      - name: answer
        type: text-generation
        llm: llamacpp                                     # a spec, or a table with `type`
      - name: judge
        type: rate-answer
        after: answer                                     # default: the step before; [] for a root
    sinks: [jsonl, parquet]
    parameters:                                           # runtime parameters per step
      answer: {llm: {generation_kwargs: {temperature: 0.7}}}
    prices:                                               # dollars per million tokens, by model
      my-finetune: {input: 0.30, output: 1.20}
    license: apache-2.0                                   # for the dataset card (README.md)
    card: {title: Answers, description: ..., task_categories: [text-generation], tags: [...]}

Every mistake is reported with the file and where in it, before any LLM is built or called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskloom.errors import TaskloomError, UnknownNameError
from taskloom.pipeline.base import Sink, Source
from taskloom.pipeline.graph import Flow
from taskloom.pipeline.pipeline import Pipeline
from taskloom.steps import Step

_TOP_LEVEL = {"name", "source", "steps", "sinks", "parameters", "output", "window", "prices", "license", "card"}


class PipelineConfigError(TaskloomError, ValueError):
    """A pipeline file that cannot be used as written; the message says where and why."""


@dataclass
class PipelineConfig:
    """A loaded pipeline file: the pipeline, its runtime parameters and its default output folder."""

    pipeline: Pipeline
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    output: Path | None = None
    path: Path | None = None


def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read a pipeline file; ``overrides`` are ``step.param=value`` strings (``--set``)."""
    import yaml

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PipelineConfigError(f"No pipeline file at {file}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        problem = getattr(error, "problem", None) or str(error)
        raise PipelineConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise PipelineConfigError(f"{file}: a pipeline file is a mapping with 'source' and 'steps'.")
    config = build_pipeline(data, base=file.parent, origin=str(file))
    config.path = file
    config.pipeline.origin = str(file)
    for override in overrides:
        apply_override(config.parameters, override)
    return config


def build_pipeline(data: Mapping[str, Any], *, base: Path = Path("."), origin: str = "pipeline") -> PipelineConfig:
    """Build a pipeline from plain data (a parsed YAML file)."""
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise PipelineConfigError(f"{origin}: unknown top-level key(s) {unknown}; known: {sorted(_TOP_LEVEL)}.")
    entries = data.get("steps")
    if not isinstance(entries, list) or not entries:
        raise PipelineConfigError(f"{origin}: 'steps' must be a non-empty list of steps.")
    steps: list[Step] = []
    afters: list[list[str] | None] = []
    for index, entry in enumerate(entries):
        step, after = _build_step(entry, index, origin)
        steps.append(step)
        afters.append(after)
    flow = _wire(steps, afters, origin)
    source = _build_source(data.get("source"), base, origin) if data.get("source") is not None else None
    sinks = [_build_sink(item, origin) for item in _as_list(data.get("sinks"))]
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PipelineConfigError(f"{origin}: 'parameters' maps step names to their runtime parameters.")
    output = data.get("output")
    from taskloom.pricing import PriceError, parse_prices

    try:
        prices = parse_prices(data.get("prices"), f"{origin}: prices")
    except PriceError as error:
        raise PipelineConfigError(str(error)) from None
    card = data.get("card") or {}
    if not isinstance(card, dict):
        raise PipelineConfigError(f"{origin}: 'card' maps title, description, task_categories and tags to values.")
    if data.get("license"):
        card = {**card, "license": str(data["license"])}
    pipeline = Pipeline(
        flow,
        source=source,
        sinks=sinks or None,
        name=str(data.get("name") or "pipeline"),
        window=data.get("window"),
        prices=prices,
        card=card,
    )
    # The output folder is relative to where the command runs (out/ beside the user), sources to the file.
    return PipelineConfig(pipeline, {str(k): dict(v or {}) for k, v in parameters.items()}, _path(output, Path(".")))


def apply_override(parameters: dict[str, dict[str, Any]], override: str) -> None:
    """Apply ``step.param=value`` (``value`` read as YAML, so ``0.2`` is a number) to ``parameters``."""
    import yaml

    target, equals, raw = override.partition("=")
    parts = target.strip().split(".")
    if not equals or len(parts) < 2 or not all(parts):
        raise PipelineConfigError(
            f"--set {override!r}: write step.parameter=value, e.g. answer.llm.generation_kwargs.temperature=0.2."
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: dict[str, Any] = parameters.setdefault(parts[0], {})
    for key in parts[1:-1]:
        node = node.setdefault(key, {})
    node[parts[-1]] = value


def _build_step(entry: Any, index: int, origin: str) -> tuple[Step, list[str] | None]:
    from taskloom.config import llm_from_spec
    from taskloom.registry import get_step_class
    from taskloom.tasks.base import Task

    where = f"{origin}: steps[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise PipelineConfigError(f"{where}: each step is a mapping with a 'type' (a task or step name).")
    fields = dict(entry)
    type_name = fields.pop("type")
    after = fields.pop("after", None)
    if "name" in fields:
        where += f" ({fields['name']!r})"
    try:
        cls = get_step_class(type_name)
    except UnknownNameError as error:
        raise PipelineConfigError(f"{where}: {error}") from None
    if issubclass(cls, Task) and "llm" in fields:
        try:
            fields["llm"] = llm_from_spec(fields["llm"])
        except (TaskloomError, ValidationError, ValueError) as error:
            raise PipelineConfigError(f"{where}: its llm cannot be built: {error}") from None
    if "name" not in fields and cls.own_registry_name() is None:
        fields["name"] = type_name
    try:
        step = cls(**fields)
        if isinstance(step, Task):
            step.resolve_llm()  # a step file that names no LLM gets the default one, chosen now
    except ValidationError as error:
        raise PipelineConfigError(f"{where}: {error}") from None
    except TaskloomError as error:  # no default LLM, say
        raise PipelineConfigError(f"{where}: {error}") from None
    if after is None:
        return step, None
    return step, [str(a) for a in _as_list(after)]


def _wire(steps: list[Step], afters: list[list[str] | None], origin: str) -> Flow:
    """Edges from each step's ``after`` (default: the step listed before it)."""
    flow = Flow()
    for step in steps:
        if step.name in flow.steps:
            raise PipelineConfigError(f"{origin}: two steps are named {step.name!r}; names must be unique.")
        flow.steps[step.name] = step
    for index, (step, after) in enumerate(zip(steps, afters, strict=True)):
        parents = after if after is not None else ([steps[index - 1].name] if index else [])
        for parent in parents:
            if parent not in flow.steps:
                raise PipelineConfigError(
                    f"{origin}: step {step.name!r} comes after {parent!r}, which is not a step here; "
                    f"steps: {', '.join(flow.steps)}."
                )
            flow.edges.append((parent, step.name))
    return flow


def _build_source(entry: Any, base: Path, origin: str) -> Source:
    from taskloom.pipeline.sources import source_for
    from taskloom.registry import get_source

    try:
        if isinstance(entry, str):
            return source_for(_path(entry, base))
        if isinstance(entry, list):
            return source_for(entry)
        if isinstance(entry, dict):
            fields = dict(entry)
            if "path" in fields:
                fields["path"] = str(_path(fields["path"], base))
            kind = fields.pop("type", None)
            if kind is None:
                if "rows" in fields:
                    return source_for(fields["rows"])
                if "path" in fields:
                    return source_for(Path(fields["path"]))
                raise PipelineConfigError(f"{origin}: source needs a 'type' (jsonl, csv, parquet...) or a 'path'.")
            return get_source(str(kind), **fields)
    except (UnknownNameError, ValidationError) as error:
        raise PipelineConfigError(f"{origin}: source: {error}") from None
    raise PipelineConfigError(f"{origin}: source is a path, a list of rows, or a mapping with 'type'.")


def _build_sink(entry: Any, origin: str) -> Sink:
    from taskloom.registry import get_sink

    fields = {"type": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, dict) else None
    if fields is None or not isinstance(fields.get("type"), str):
        raise PipelineConfigError(f"{origin}: each sink is a name (jsonl, parquet, dataset) or a mapping with 'type'.")
    kind = fields.pop("type")
    try:
        return get_sink(kind, **fields)
    except (UnknownNameError, ValidationError) as error:
        raise PipelineConfigError(f"{origin}: sink {kind!r}: {error}") from None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _path(value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path
