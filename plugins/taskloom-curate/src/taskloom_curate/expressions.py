"""Row expressions: ``rating >= 4 and orders_agree``, in Jinja2's expression syntax, never ``eval``.

A filter's expression comes from a pipeline file, so it must not be able to do anything but read
the row. Jinja2's parser gives the syntax users know from prompt templates; the tree it builds
is then turned into a tree of small Python closures here, node kind by node kind from an
allowlist: column names, literals, comparisons, ``and`` / ``or`` / ``not``, arithmetic, ``~``,
``x if c else y``, subscripts (``scores[0]``), and Jinja's filters and tests from an allowlist
(``|length``, ``|lower``, ``is none``...). Attribute access (``x.__class__``) and calls
(``x.pop()``) are refused when the expression is compiled, with the reason. Closures rather
than a Jinja template: a template call builds a context per row (about 13 µs), the closures
cost about one microsecond.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from taskloom.plugin import TaskloomError

Row = dict[str, Any]
Evaluator = Callable[[Row], Any]

FILTERS = frozenset(
    {"abs", "count", "default", "first", "float", "int", "last", "length", "lower", "max", "min", "round"}
    | {"string", "sum", "trim", "upper", "wordcount"}
)
"""The Jinja filters an expression may use: pure functions of their value."""
TESTS = frozenset(
    {"boolean", "defined", "divisibleby", "even", "false", "float", "in", "integer", "none", "number", "odd"}
    | {"sameas", "string", "true", "undefined", "eq", "ne", "lt", "le", "gt", "ge"}
)
"""The Jinja tests an expression may use (``rating is none``, ``n is divisibleby 2``)."""

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}
_BINARY: dict[type[nodes.Node], Callable[[Any, Any], Any]] = {
    nodes.Add: operator.add,
    nodes.Sub: operator.sub,
    nodes.Mul: operator.mul,
    nodes.Div: operator.truediv,
    nodes.FloorDiv: operator.floordiv,
    nodes.Mod: operator.mod,
}
_ENVIRONMENT = ImmutableSandboxedEnvironment()


class ExpressionError(TaskloomError, ValueError):
    """An expression that does not parse, or that reaches outside what a row expression may do."""


class RowExpression:
    """A compiled expression over a row's columns; :attr:`columns` are the names it reads."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.columns: list[str] = []
        try:
            parser = Parser(_ENVIRONMENT, source, state="variable")
            tree = parser.parse_expression()
            if not parser.stream.eos:
                raise TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno)
        except TemplateSyntaxError as error:
            raise ExpressionError(f"the expression {source!r} does not parse: {error.message}") from None
        self._evaluate = self._compile(tree)

    def __call__(self, row: Row) -> Any:
        return self._evaluate(row)

    def _refuse(self, what: str) -> ExpressionError:
        return ExpressionError(
            f"the expression {self.source!r} uses {what}, which a row expression may not: it may read "
            "columns, compare, combine with and/or/not, do arithmetic, index lists, and use the filters "
            f"{', '.join(sorted(FILTERS))} and the tests {', '.join(sorted(TESTS))}."
        )

    def _compile(self, node: nodes.Node) -> Evaluator:  # one case per node kind, from the allowlist
        if isinstance(node, nodes.Name):
            name = node.name
            if name in ("true", "True"):
                return lambda row: True
            if name in ("false", "False"):
                return lambda row: False
            if name in ("none", "None"):
                return lambda row: None
            if name not in self.columns:
                self.columns.append(name)
            return lambda row: row[name]
        if isinstance(node, nodes.Const):
            value = node.value
            return lambda row: value
        if isinstance(node, nodes.List | nodes.Tuple):
            items = [self._compile(item) for item in node.items]
            return lambda row: [item(row) for item in items]
        if isinstance(node, nodes.And):
            left, right = self._compile(node.left), self._compile(node.right)
            return lambda row: left(row) and right(row)
        if isinstance(node, nodes.Or):
            left, right = self._compile(node.left), self._compile(node.right)
            return lambda row: left(row) or right(row)
        if isinstance(node, nodes.Not):
            inner = self._compile(node.node)
            return lambda row: not inner(row)
        if isinstance(node, nodes.Neg):
            inner = self._compile(node.node)
            return lambda row: -inner(row)
        if isinstance(node, nodes.Pos):
            return self._compile(node.node)
        if isinstance(node, nodes.Compare):
            return self._comparison(node)
        binary = _BINARY.get(type(node))
        if binary is not None:
            assert isinstance(node, nodes.BinExpr)
            left, right = self._compile(node.left), self._compile(node.right)
            return lambda row: binary(left(row), right(row))
        if isinstance(node, nodes.Concat):
            parts = [self._compile(part) for part in node.nodes]
            return lambda row: "".join(str(part(row)) for part in parts)
        if isinstance(node, nodes.CondExpr):
            test, then = self._compile(node.test), self._compile(node.expr1)
            otherwise = self._compile(node.expr2) if node.expr2 is not None else (lambda row: None)
            return lambda row: then(row) if test(row) else otherwise(row)
        if isinstance(node, nodes.Getitem):
            target, key = self._compile(node.node), self._compile(node.arg)
            return lambda row: target(row)[key(row)]
        if isinstance(node, nodes.Filter | nodes.Test):
            return self._filter_or_test(node)
        if isinstance(node, nodes.Getattr):
            return self._dont(f"attribute access ('.{node.attr}')")
        if isinstance(node, nodes.Call):
            return self._dont("a call")
        return self._dont(f"a {type(node).__name__} expression")

    def _dont(self, what: str) -> Evaluator:
        raise self._refuse(what)

    def _comparison(self, node: nodes.Compare) -> Evaluator:
        first = self._compile(node.expr)
        steps = [(_COMPARE[operand.op], self._compile(operand.expr)) for operand in node.ops]

        def compare(row: Row) -> bool:
            left = first(row)
            for test, right_of in steps:  # a < b < c, as Python chains it
                right = right_of(row)
                if not test(left, right):
                    return False
                left = right
            return True

        return compare

    def _filter_or_test(self, node: nodes.Filter | nodes.Test) -> Evaluator:
        kind, allowed = ("filter", FILTERS) if isinstance(node, nodes.Filter) else ("test", TESTS)
        if node.name not in allowed:
            raise self._refuse(f"the {kind} {node.name!r}")
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise self._refuse(f"*args or **kwargs in the {kind} {node.name!r}")
        assert node.node is not None
        value = self._compile(node.node)
        args = [self._compile(arg) for arg in node.args]
        kwargs = {str(pair.key): self._compile(pair.value) for pair in node.kwargs}  # Keyword nodes: str keys
        name = node.name
        call = _ENVIRONMENT.call_filter if isinstance(node, nodes.Filter) else _ENVIRONMENT.call_test
        return lambda row: call(name, value(row), [a(row) for a in args], {k: v(row) for k, v in kwargs.items()})


__all__ = ["FILTERS", "TESTS", "ExpressionError", "RowExpression"]
