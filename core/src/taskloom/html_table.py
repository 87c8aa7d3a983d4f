"""Rows as a small HTML table, for Jupyter: a run's result and a task's output show as data, not a repr.

Kept free of any plotting library so that displaying rows costs nothing to import. Every value is
escaped and long values are cut: a notebook cell must stay readable with rows of whole documents.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from taskloom.typing import Row

CELL = 120
"""Characters of a value shown in a cell."""


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > CELL:
        text = text[:CELL] + "…"
    return html.escape(text)


def rows_html(rows: Iterable[Row], *, limit: int = 20, total: int | None = None, caption: str = "") -> str:
    """The first ``limit`` rows as an HTML table; ``total`` (if known) says how many there are in all."""
    shown: list[Row] = []
    for row in rows:
        if len(shown) == limit:
            break
        shown.append(row)
    columns: list[str] = []
    for row in shown:
        columns.extend(key for key in row if key not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row[c]) if c in row else ''}</td>" for c in columns) + "</tr>" for row in shown
    )
    count = f"{len(shown)} of {total} rows" if total is not None and total > len(shown) else f"{len(shown)} rows"
    note = html.escape(f"{caption} ({count})" if caption else count)
    return (
        f'<table class="taskloom-rows"><caption style="text-align:left">{note}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


class Rows(list[Row]):
    """A list of rows that a notebook shows as a table; in every other way a plain ``list``."""

    def _repr_html_(self) -> str:
        return rows_html(self, total=len(self))


__all__ = ["Rows", "rows_html"]
