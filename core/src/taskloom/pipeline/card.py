"""The dataset card: ``README.md`` in every run folder, in the Hugging Face dataset-card format.

A dataset that cannot say how it was made cannot be trusted, reused or reproduced. So every run
writes a card beside its outputs: a YAML header the Hub reads (one ``configs`` entry per leaf
step, its size category, task categories, license), and a body a person reads: the steps with
their models and prompt templates, what each step did (rows, failures, drops, tokens, dollars),
what the judges' statistics say of them, and the command that makes it again. It is written
anew at the end of each run from that run's counters, so a resumed run's card describes the
whole dataset as it now stands on disk.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskloom.tasks.base import Task

if TYPE_CHECKING:
    from taskloom.pipeline.executor import RunStats
    from taskloom.pipeline.pipeline import Pipeline

CARD_FILENAME = "README.md"
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
_TEMPLATE_LIMIT = 1500


def size_category(rows: int) -> str:
    """The Hub's size category for ``rows`` rows."""
    for bound, name in _SIZES:
        if rows < bound:
            return name
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def write_card(pipeline: Pipeline, stats: RunStats, folder: Path) -> Path:
    """Write (or rewrite) the run folder's ``README.md``; its path."""
    path = folder / CARD_FILENAME
    path.write_text(render_card(pipeline, stats, folder), encoding="utf-8")
    return path


def render_card(pipeline: Pipeline, stats: RunStats, folder: Path) -> str:
    return _header(pipeline, stats, folder) + _body(pipeline, stats)


def _data_file(folder: Path, leaf: str) -> str:
    for suffix in (".parquet", ".jsonl"):
        if (folder / f"{leaf}{suffix}").is_file():
            return f"{leaf}{suffix}"
    return f"{leaf}.jsonl"


def _header(pipeline: Pipeline, stats: RunStats, folder: Path) -> str:
    import yaml

    leaves = pipeline.graph.leaves
    rows = max((stats.steps[leaf].rows_out for leaf in leaves), default=0)
    header: dict[str, Any] = {}
    if pipeline.card.get("license"):
        header["license"] = pipeline.card["license"]
    header["task_categories"] = list(pipeline.card.get("task_categories") or ["text-generation"])
    header["tags"] = sorted({"synthetic", "taskloom", *pipeline.card.get("tags", [])})
    header["size_categories"] = [size_category(rows)]
    header["configs"] = [
        {
            "config_name": leaf,
            "data_files": [{"split": "train", "path": _data_file(folder, leaf)}],
            **({"default": True} if index == 0 else {}),
        }
        for index, leaf in enumerate(leaves)
    ]
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n"


def _body(pipeline: Pipeline, stats: RunStats) -> str:

    title = pipeline.card.get("title") or pipeline.name
    lines = [f"# {title}", ""]
    if pipeline.card.get("description"):
        lines += [str(pipeline.card["description"]).strip(), ""]
    lines += [
        f"Made with [taskloom](https://pypi.org/project/taskloom/) by the pipeline `{pipeline.name}`: "
        f"{stats.done}{' of ' + str(stats.total) if stats.total is not None else ''} source rows through "
        f"{_count(len(pipeline.graph.order), 'step')}; this run's requests cost {stats.cost_text()}.",
        "",
        "## Steps",
        "",
        "| step | type | model | rows in | rows out | failed | dropped | tokens in / out | cost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in pipeline.graph.order:
        step = pipeline.graph.steps[name]
        counters = stats.steps[name]
        model = counters.model or "-"
        tokens = f"{counters.input_tokens:,} / {counters.output_tokens:,}" if counters.is_task else "-"
        left_out = sum(counters.dropped.values())
        cost = counters.cost_text() if counters.is_task else "-"
        lines.append(
            f"| {name} | {step.type_name()} | {model} | {counters.rows_in} | {counters.rows_out} | "
            f"{counters.rows_failed} | {left_out} | {tokens} | {cost} |"
        )
    lines.append("")
    judges = [(name, stats.steps[name].judge) for name in pipeline.graph.order if stats.steps[name].judge]
    if judges:
        lines += ["## How far the judges can be trusted", ""]
        for name, judge in judges:
            assert judge is not None
            lines.append(f"- **{name}**: {judge.line()}.")
        lines += [
            "",
            "An unreadable reply is one the judge wrote but that could not be parsed; a refusal is no "
            "text at all. A high order-flip rate means the judge's verdict depends on which answer it "
            "read first; a longer-answer win rate far from 50% means it prefers length. A rater that gives "
            "the first of several answers the highest score far more often than its share (50% for two) "
            "rates by position.",
            "",
        ]
    measured = [(name, stats.steps[name]) for name in pipeline.graph.order if stats.steps[name].measured]
    if measured:
        lines += ["## Measured over the dataset", ""]
        for name, counters in measured:
            lines.append(f"- **{name}**: {counters.measured_text()}")
        lines += ["", "Values in brackets are 95% confidence intervals.", ""]
    dropped_steps = [(name, stats.steps[name].dropped) for name in pipeline.graph.order if stats.steps[name].dropped]
    if dropped_steps:
        lines += ["## Rows left out", ""]
        for name, reasons_counted in dropped_steps:
            reasons = "; ".join(f"{reason}: {count}" for reason, count in sorted(reasons_counted.items()))
            lines.append(f"- **{name}**: {reasons}")
        lines.append("")
    prompts = []
    for name in pipeline.graph.order:
        step = pipeline.graph.steps[name]
        text = _prompt_of(step) if isinstance(step, Task) else None
        if text:
            prompts.append((name, text))
    if prompts:
        lines += ["## Prompts", ""]
        for name, text in prompts:
            shown = text if len(text) <= _TEMPLATE_LIMIT else text[:_TEMPLATE_LIMIT] + "\n[...]"
            lines += [f"### {name}", "", "```jinja", shown.rstrip(), "```", ""]
    lines += ["## Reproduce", ""]
    if pipeline.origin:
        lines += ["```console", f"taskloom run {pipeline.origin}", "```", ""]
    else:
        lines += ["Run the same `Pipeline` again into this folder: it resumes from the cache in it.", ""]
    lines.append(f"Prices used for dollars: the shipped table of {_prices_date()} and the run's own overrides.")
    return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _prompt_of(task: Task) -> str | None:
    try:
        text = task.described_prompt()
    except Exception:  # a template file that cannot be read: the card goes on without it
        return None
    return textwrap.dedent(text) if text else None


def _prices_date() -> str:
    from taskloom.pricing import PRICES_DATE

    return PRICES_DATE


__all__ = ["CARD_FILENAME", "render_card", "size_category", "write_card"]
