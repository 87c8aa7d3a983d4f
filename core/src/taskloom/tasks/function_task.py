"""Tasks from functions: a prompt template plus a parser, for users who want no class.

    @task("Summarise in one sentence:\\n{{ text }}", outputs=["summary"])
    def summarise(output: str) -> str:
        return output.strip()

    summarise(llm=get_llm("llamacpp"))   # a Task like any other

The decorator returns a real :class:`Task` subclass, importable where the function was defined,
so it dumps, loads and registers like a hand-written one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from taskloom.component import kebab_case
from taskloom.steps import StepColumns
from taskloom.tasks.base import Task
from taskloom.templates import compile_template, template_variables
from taskloom.typing import ChatType, Row

Parser = Callable[..., Any]


class FunctionTask(Task):
    """Base of the classes :func:`task` builds; the ClassVars hold the decorator's arguments."""

    prompt_template: ClassVar[str] = ""
    system_template: ClassVar[str | None] = None
    input_columns: ClassVar[tuple[str, ...]] = ()
    output_columns_: ClassVar[tuple[str, ...]] = ()
    parser: ClassVar[Parser | None] = None
    parser_takes_row: ClassVar[bool] = False

    @property
    def inputs(self) -> StepColumns:
        return list(self.input_columns)

    @property
    def outputs(self) -> StepColumns:
        return [*self.output_columns_, "model_name"]

    def format_input(self, input: Row) -> ChatType:
        user = compile_template(self.prompt_template).render(input)
        if self.system_template is None:
            return [{"role": "user", "content": user}]
        system = compile_template(self.system_template).render(input)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        parser = type(self).parser
        if parser is None:
            return {self.output_columns_[0]: output}
        value = parser(output, input) if self.parser_takes_row else parser(output)
        if isinstance(value, dict):
            unknown = set(value) - set(self.output_columns_)
            if unknown:
                raise ValueError(
                    f"parser returned columns {sorted(unknown)} that are not in outputs {list(self.output_columns_)}"
                )
            return value
        if len(self.output_columns_) != 1:
            raise TypeError(f"the parser of task {self.name!r} must return a dict with {list(self.output_columns_)}")
        return {self.output_columns_[0]: value}


def task(
    template: str,
    *,
    outputs: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    system_prompt: str | None = None,
    name: str | None = None,
) -> Callable[[Parser], type[FunctionTask]]:
    """Make a Task class from a Jinja2 prompt ``template`` and the decorated output parser.

    The parser takes ``(output)`` or ``(output, row)`` and returns a dict of output columns, or a
    single value when there is one output column. ``outputs`` defaults to the function's name;
    ``inputs`` to the template's variables. ``system_prompt`` may be a template too.
    """

    def decorate(parser: Parser) -> type[FunctionTask]:
        variables = set(template_variables(template))
        if system_prompt is not None:
            variables |= set(template_variables(system_prompt))
        columns = tuple(inputs) if inputs is not None else tuple(sorted(variables))
        out = tuple(outputs) if outputs is not None else (parser.__name__,)
        if not out:
            raise ValueError("a task needs at least one output column.")
        compile_template(template)  # fail at definition time on a broken template
        positional = [
            p
            for p in inspect.signature(parser).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        namespace: dict[str, Any] = {
            "__module__": parser.__module__,
            "__qualname__": parser.__qualname__,
            "__doc__": parser.__doc__ or f"Task made from the function {parser.__qualname__}.",
            "default_name": name or kebab_case(parser.__name__),
            "prompt_template": template,
            "system_template": system_prompt,
            "input_columns": columns,
            "output_columns_": out,
            "parser": staticmethod(parser),
            "parser_takes_row": len(positional) >= 2,
        }
        return type(parser.__name__, (FunctionTask,), namespace)

    return decorate
