"""How a run shows itself: a live rich display on a terminal, plain log lines anywhere else.

Both read the executor's counters on a timer, so showing progress costs the run nothing per row.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from taskloom.pipeline.executor import RunStats
from taskloom.text_table import format_table


def _rate(stats: RunStats) -> float:
    return stats.done / stats.elapsed if stats.elapsed > 0 else 0.0


def status_line(stats: RunStats) -> str:
    """One line: rows done of total, rate, requests in flight, failures, tokens."""
    total = f"/{stats.total}" if stats.total is not None else ""
    tokens_in, tokens_out = stats.tokens
    limited = f", {stats.rate_limited} answered 429" if stats.rate_limited else ""
    stopping = f", stopping ({stats.stopping})" if stats.stopping else ""
    return (
        f"{stats.done}{total} rows, {_rate(stats):.1f} rows/s, {stats.in_flight} in flight, "
        f"{stats.failed} failed, tokens {tokens_in} in / {tokens_out} out, {stats.cost_text()}{limited}, "
        f"{stats.elapsed:.0f}s{stopping}"
    )


class LogProgress:
    """Plain lines every ``every`` seconds (CI logs, pipes): no cursor tricks."""

    def __init__(self, stream: TextIO | None = None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._last = 0.0

    def __call__(self, stats: RunStats) -> None:
        now = time.monotonic()
        if stats.finished is None and now - self._last < self.every:
            return
        self._last = now
        print(f"[taskloom] {status_line(stats)}", file=self.stream, flush=True)


class RichProgress:
    """A live display: a bar for rows, then a line per step with its counters."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._started = False

    def __call__(self, stats: RunStats) -> None:
        if not self._started:
            self.live.start()
            self._started = True
        self.live.update(self._render(stats))
        if stats.finished is not None:
            self.live.stop()

    def _render(self, stats: RunStats) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_row(ProgressBar(total=stats.total or None, completed=stats.done, width=40), status_line(stats))
        steps = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
        # Short headers: the table has to fit an 80-column terminal. "live" is requests in flight.
        headers = ("step", "in", "out", "failed", "req", "live", "429", "cached", "tokens", "cost", "limit")
        for header in headers:
            steps.add_column(header, justify="left" if header in ("step", "limit") else "right")
        for step in stats.steps.values():
            task = step.is_task
            steps.add_row(
                step.name,
                str(step.rows_in),
                str(step.rows_out),
                str(step.rows_failed),
                str(step.requests) if task else "-",
                str(step.in_flight) if task else "-",
                str(step.rate_limited) if task else "-",
                str(step.cached) if task else "-",
                f"{step.input_tokens}/{step.output_tokens}" if task else "-",
                step.cost_text(),
                step.limits_text() if task else "-",
            )
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(steps)
        return outer


def choose_progress(mode: str = "auto") -> Any:
    """``auto``: rich on a terminal, log lines otherwise; ``rich``, ``log`` or ``none`` to force one."""
    if mode == "none":
        return None
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        try:
            return RichProgress()
        except ImportError:
            return LogProgress()
    return LogProgress()


def summary_table(stats: RunStats) -> str:
    """The end-of-run summary: per step, rows ok / failed, requests, retries, cache hits, tokens."""
    headers = ["step", "rows", "ok", "failed", "requests", "retries", "429", "cached", "tokens in", "tokens out"]
    headers.append("cost")
    lines = []
    notes = []
    for step in stats.steps.values():
        lines.append(
            [
                step.name,
                str(step.rows_out),
                str(step.rows_out - step.rows_failed),
                str(step.rows_failed),
                str(step.requests) if step.is_task else "-",
                str(step.retries) if step.is_task else "-",
                str(step.rate_limited) if step.is_task else "-",
                str(step.cached) if step.is_task else "-",
                str(step.input_tokens) if step.is_task else "-",
                str(step.output_tokens) if step.is_task else "-",
                step.cost_text(),
            ]
        )
        if step.is_task and step.limits_text():
            notes.append(f"{step.name}: limits in force {step.limits_text()}")
        if step.judge is not None:
            notes.append(f"{step.name} (judge): {step.judge.line()}")
        if step.measured:
            notes.append(f"{step.name} measured: {step.measured_text()}")
        if step.dropped:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(step.dropped.items()))
            notes.append(f"{step.name} dropped {sum(step.dropped.values())} rows ({reasons})")
    tail = f"\n{stats.done} rows in {stats.elapsed:.1f}s ({_rate(stats):.1f} rows/s), cost {stats.cost_text()}"
    if notes:
        tail += "\n" + "\n".join(notes)
    return format_table(lines, headers) + tail
