"""Jinja2 prompt templates: compiled once, strict about missing variables.

Jinja2 is imported on first use, so ``import taskloom`` stays fast for users who never template.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    # StrictUndefined: a typo in a template is an error, not an empty string sent to a paid API.
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


@cache
def compile_template(source: str) -> jinja2.Template:
    return _environment().from_string(source)


@cache
def template_variables(source: str) -> tuple[str, ...]:
    """Names the template reads from its context, in a stable order."""
    from jinja2 import meta

    return tuple(sorted(meta.find_undeclared_variables(_environment().parse(source))))
