"""Build the report page: plotly figures, a row table and the failures, in one offline HTML file.

The page must open years later on a machine with no network, so nothing is fetched: plotly's
JavaScript is inlined once, and every ``http(s)://`` text inside it (attribution links of map
tiles, the logo's link) is rewritten into an equivalent JavaScript escape, so no part of the file
reads as a URL to a browser or to a reviewer's grep. The charts are plotly's own ``div``s; the
row table and its search are a few lines of our own JavaScript.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from taskloom_report.caches import CacheSummary, read_caches
from taskloom_report.scan import METADATA, STATUSES, Scan, scan, tasks_of, worst

CELL = 160
"""Characters of a value shown in a table cell; the detail pane shows more."""
DETAIL = 20_000
"""Characters of one string kept in a row's detail: a row is for reading, not for a dump."""

_URL = re.compile(r"h(ttps?:)//")


def offline_plotly_js() -> str:
    """plotly's bundle with every URL written as a JS escape (``\\x68ttps:\\/\\/``): same strings, no links."""
    from plotly.offline import get_plotlyjs

    return _URL.sub(r"\\x68\1\\/\\/", get_plotlyjs())


class Report:
    """A built report: the page as :attr:`html`, :meth:`save` to write it, shown inline in Jupyter."""

    def __init__(self, html_text: str, rows: int, sampled: int) -> None:
        self.html = html_text
        self.rows = rows
        self.sampled = sampled

    def save(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.html, encoding="utf-8")
        return target

    def summary_line(self) -> str:
        shown = f"{self.sampled} of {self.rows} rows shown" if self.sampled < self.rows else f"{self.rows} rows"
        return f"{shown}, {len(self.html) / 1e6:.1f} MB"

    def _repr_html_(self) -> str:
        # srcdoc keeps the page's scripts in their own document, away from the notebook's.
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
            'style="width:100%;height:720px;border:1px solid #ddd" sandbox="allow-scripts"></iframe>'
        )

    def __repr__(self) -> str:
        return f"Report({self.summary_line()})"


def _run_record(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from taskloom.plugin import TaskloomError

    path = run_dir / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskloomError(
            f"{str(run_dir)!r} is not a run folder: it has no run.json. Give the folder a `taskloom run` wrote."
        ) from None
    except ValueError as error:
        raise TaskloomError(f"{path} cannot be read ({error}); the report needs it.") from error
    runs = data.get("runs") if isinstance(data, dict) else None
    last = runs[-1] if isinstance(runs, list) and runs else {}
    return data, last


def step_outputs(record: dict[str, Any]) -> dict[str, list[str]] | None:
    """Each step's output columns as ``run.json`` records them; None for a folder from before that."""
    steps = record.get("steps")
    if not isinstance(steps, dict) or not steps:
        return None
    found = {name: info["outputs"] for name, info in steps.items() if isinstance(info, dict) and "outputs" in info}
    return found if len(found) == len(steps) else None


def build_report(run_dir: str | os.PathLike[str], *, sample: int = 500) -> Report:
    """Read a run folder in one streaming pass and build its page."""
    folder = Path(run_dir)
    data, record = _run_record(folder)
    outputs = step_outputs(record)
    found = scan(folder, sample=sample, outputs=outputs)
    page = _render(folder, data, record, found, outputs is not None, read_caches(folder))
    return Report(page, found.rows, len(found.sample))


def write_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Build and write the report (default ``RUN_DIR/report.html``); the path written."""
    target = Path(output) if output is not None else Path(run_dir) / "report.html"
    return build_report(run_dir).save(target)


# -- figures -------------------------------------------------------------------------------


def _figure_html(figure: Any) -> str:
    import plotly.io as pio

    figure.update_layout(margin={"l": 40, "r": 20, "t": 40, "b": 40}, height=340, template="plotly_white")
    text: str = pio.to_html(
        figure, full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True}
    )
    return text


def _graph_figure(data: dict[str, Any], steps: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    signature = data.get("signature") or {}
    order: list[str] = [str(s.get("name")) for s in signature.get("steps", []) if isinstance(s, dict)] or list(steps)
    names = ["source", *order]
    index = {name: i for i, name in enumerate(names)}
    parents: dict[str, list[str]] = {name: [] for name in order}
    for edge in signature.get("edges", []):
        if isinstance(edge, list) and len(edge) == 2 and edge[1] in parents:
            parents[edge[1]].append(edge[0])
    sources, targets, values = [], [], []
    for name in order:
        rows_in = int((steps.get(name) or {}).get("rows_in") or 0)
        for parent in parents[name] or ["source"]:
            if parent in index:
                sources.append(index[parent])
                targets.append(index[name])
                values.append(max(rows_in, 1))
    labels = []
    for name in names:
        info = steps.get(name) or {}
        labels.append(name if name == "source" else f"{name} ({info.get('rows_out', '?')} out)")
    figure = go.Figure(
        go.Sankey(
            node={"label": labels, "pad": 24, "thickness": 16},
            link={"source": sources, "target": targets, "value": values},
        )
    )
    figure.update_layout(title="Rows flowing between the steps")
    return _figure_html(figure)


def _timeline_figure(steps: dict[str, Any]) -> str:
    """When each step was busy, from its first row to its last: the steps overlap as rows stream."""
    import plotly.graph_objects as go

    timed = [(n, i) for n, i in steps.items() if isinstance(i, dict) and i.get("active_s") is not None]
    if not timed:
        return ""
    names = [name for name, _ in timed]
    figure = go.Figure(
        go.Bar(
            y=names,
            x=[max(info["active_s"], 0.001) for _, info in timed],
            base=[info.get("started_s") or 0.0 for _, info in timed],
            orientation="h",
            hovertemplate="%{y}: from %{base:.2f} s for %{x:.2f} s<extra></extra>",
        )
    )
    figure.update_layout(title="When each step was busy", xaxis_title="seconds into the run")
    figure.update_yaxes(autorange="reversed", type="category")
    return _figure_html(figure)


def _arrivals_figure(caches: CacheSummary) -> str:
    """Generations written to the caches over time, over every run of the folder."""
    import datetime

    import plotly.graph_objects as go

    if caches.first is None or not caches.arrivals:
        return ""
    start = caches.first
    buckets = sorted(caches.arrivals)
    when = [datetime.datetime.fromtimestamp(start + b * caches.width, datetime.UTC) for b in buckets]
    figure = go.Figure(go.Bar(x=when, y=[caches.arrivals[b] for b in buckets], width=caches.width * 1000 * 0.9))
    figure.update_layout(
        title=f"Generations paid for, per {caches.width:.3g} s (every run of this folder)",
        xaxis_title="time written (UTC)",
        yaxis_title="generations",
    )
    return _figure_html(figure)


def _judge_figure(name: str, judge: dict[str, Any]) -> str:
    import plotly.graph_objects as go

    distribution = judge.get("distribution") or {}
    figure = go.Figure(go.Bar(x=list(distribution), y=list(distribution.values())))
    figure.update_layout(title=f"{name}: scores or verdicts", xaxis_title="value", yaxis_title="items")
    figure.update_xaxes(type="category")
    return _figure_html(figure)


def _length_figure(name: str, tokens: list[int]) -> str:
    import plotly.graph_objects as go

    # Binned here, not by plotly in the page: the page then carries 60 bars, not every length.
    counts = Counter(tokens)
    low, high = min(tokens), max(tokens)
    width = max(1, -(-(high - low + 1) // 60))
    bins: Counter[int] = Counter()
    for value, count in counts.items():
        bins[low + (value - low) // width * width] += count
    xs = sorted(bins)
    figure = go.Figure(go.Bar(x=[x + width / 2 for x in xs], y=[bins[x] for x in xs], width=width))
    figure.update_layout(title=f"{name}: output length", xaxis_title="output tokens", yaxis_title="generations")
    return _figure_html(figure)


# -- the page ------------------------------------------------------------------------------


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"… ({len(value) - limit} more characters)"
    if isinstance(value, list):
        return [_cut(v, limit) for v in value]
    if isinstance(value, dict):
        return {str(k): _cut(v, limit) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CELL else text[:CELL] + "…"


def _detail(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the detail pane shows it: its columns, then per task its inputs, outputs and error."""
    meta = row.get(METADATA) if isinstance(row.get(METADATA), dict) else {}
    assert isinstance(meta, dict)
    tasks = {}
    for task in sorted(tasks_of(meta)):
        tasks[task] = {
            kind: meta[f"{kind}_{task}"]
            for kind in ("raw_input", "raw_output", "statistics", "error")
            if f"{kind}_{task}" in meta
        }
    columns = {k: v for k, v in row.items() if k != METADATA}
    detail: dict[str, Any] = _cut({"columns": columns, "tasks": tasks}, DETAIL)
    return detail


def _json_script(value: Any) -> str:
    # JSON inside <script>: '<' escaped so no '</script>' in the data can end the element early.
    text = json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c")
    return _URL.sub(r"h\1\\/\\/", text)


def _neutral(text: str) -> str:
    """HTML text with URLs broken by a zero-width space: the data's own links shown, never followed."""
    return _URL.sub("h\\1/\u200b/", text)


def _render(
    folder: Path,
    data: dict[str, Any],
    record: dict[str, Any],
    found: Scan,
    exact_status: bool,
    caches: CacheSummary,
) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    steps: dict[str, Any] = record.get("steps") or {}
    signature = data.get("signature") or {}
    types = {s.get("name"): s.get("type") for s in signature.get("steps", []) if isinstance(s, dict)}
    charts = {
        "graph": _graph_figure(data, steps) if steps or signature else "",
        "timeline": _timeline_figure(steps),
        "arrivals": _arrivals_figure(caches),
    }
    runs = [dict(run, cache_hits=_cache_hits(run)) for run in data.get("runs") or [] if isinstance(run, dict)]
    judges = []
    for name, info in steps.items():
        judge = (info or {}).get("judge")
        if isinstance(judge, dict):
            judges.append({"name": name, "type": types.get(name), "stats": judge, "chart": _judge_figure(name, judge)})
    lengths = [
        {"name": name, "count": len(tokens), "mean": sum(tokens) / len(tokens), "chart": _length_figure(name, tokens)}
        for name, tokens in sorted(found.output_tokens.items())
        if tokens and not isinstance((steps.get(name) or {}).get("judge"), dict)
    ]
    columns: list[str] = []
    for kept in found.sample:
        for key in kept.row:
            if key != METADATA and key not in columns:
                columns.append(key)
    shown_columns = columns[:6]
    table = [
        {
            "number": kept.number,
            "leaf": kept.leaf,
            "status": worst(kept.statuses),
            "steps": json.dumps(kept.statuses),
            "cells": [_cell(kept.row.get(c)) for c in shown_columns],
        }
        for kept in found.sample
    ]
    order = [name for name in steps if name in found.by_task]
    by_task = {name: found.by_task[name] for name in [*order, *sorted(set(found.by_task) - set(order))]}
    details = {str(kept.number): _detail(kept.row) for kept in found.sample}
    failures = [
        {
            "message": group.message,
            "count": group.count,
            "steps": ", ".join(f"{s} ({n})" for s, n in group.steps.most_common()),
            "example": json.dumps(_cut(group.example, 600), ensure_ascii=False, indent=1, default=str)
            if group.example
            else "",
        }
        for group in sorted(found.failures.values(), key=lambda g: -g.count)
    ]
    env = Environment(loader=PackageLoader("taskloom_report", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["dollars"] = dollars
    page = env.get_template("report.html").render(
        title=str(data.get("pipeline") or folder.name),
        folder=str(folder),
        data=data,
        record=record,
        steps=steps,
        types=types,
        charts=charts,
        judges=judges,
        lengths=lengths,
        columns=shown_columns,
        table=table,
        statuses=STATUSES,
        found=found,
        failures=failures,
        details_json=_json_script(details),
        exact_status=exact_status,
        by_task=by_task,
        runs=runs,
        spent=_cost([task for run in runs for task in _tasks(run)]),
        caches=caches,
        plotly_js=offline_plotly_js(),
    )
    return _neutral_outside_scripts(page)


def _tasks(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The recorded tasks of a run's entry (the steps that made requests), or a step's own entry."""
    steps = entry.get("steps")
    found = [s for s in steps.values() if isinstance(s, dict)] if isinstance(steps, dict) else [entry]
    return [task for task in found if "requests" in task]


def _cost(tasks: list[dict[str, Any]]) -> str:
    """Recorded tasks' dollars in the words of the end-of-run summary (core's ``StepStats.cost_text``):
    dollars, ``$0 (local)`` when every one ran on this machine, ``no price``; "" for no task."""
    from taskloom.plugin import StepStats

    if not tasks:
        return ""
    return StepStats(
        "recorded",
        is_task=True,
        cost_usd=sum(t["cost_usd"] for t in tasks if isinstance(t.get("cost_usd"), int | float)),
        unpriced_requests=sum(int(t.get("unpriced_requests") or 0) for t in tasks),
        local=all(t.get("local") for t in tasks),
    ).cost_text()


def dollars(entry: dict[str, Any]) -> str:
    """What a recorded step or run cost, as the summary says it (a run: its tasks together)."""
    return _cost(_tasks(entry))


def _cache_hits(run: dict[str, Any]) -> int:
    steps = run.get("steps")
    if not isinstance(steps, dict):
        return 0
    return sum(int(info.get("cached") or 0) for info in steps.values() if isinstance(info, dict))


def _neutral_outside_scripts(page: str) -> str:
    """Break URLs in the page's own text (rows may quote links), leaving the inlined scripts alone."""
    pieces = re.split(r"(<script\b.*?</script>)", page, flags=re.S)
    return "".join(piece if piece.startswith("<script") else _neutral(piece) for piece in pieces)
