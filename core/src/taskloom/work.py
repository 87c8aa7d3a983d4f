"""One unit of work: what a step does to a batch of rows, whoever drives it.

A step's :meth:`~taskloom.steps.Step.work` is a generator that does the whole row recipe (check
the columns, map the inputs, format, plan the LLM calls, build the output rows, map the outputs,
record errors) and hands its LLM calls to the caller: it yields lists of :class:`Call` that may
run at the same time, is sent their outputs in the same order, and returns the output rows.

Drivers only decide when and where the calls run: :func:`run_work` answers them with a
synchronous function (``Task.process``, ``Pipeline.dry_run``); the pipeline executor awaits
each call through its cache, retries and concurrency limit; a Ray worker does the same on
another machine. None of them repeats a step of the recipe, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from taskloom.typing import ChatType, GenerateOutput, Row


@dataclass(slots=True)
class Call:
    """One request a task makes for a row: a chat and how many answers to it.

    ``first_index`` is the generation index of the first answer. The pipeline's cache keys each
    answer by it, so a task that asks the same chat once per generation (one chain of calls per
    generation) gives each chain its own index, and a resumed run finds every chain's answers.
    """

    chat: ChatType
    count: int = 1
    first_index: int = 0
    kwargs: Mapping[str, Any] | None = None
    """Generation options for this call. In a plan, on top of the task's; in what
    :meth:`~taskloom.steps.Step.work` yields, the task's and the plan's together.

    Slotted and not frozen: one is made per row on the hot path, and a frozen dataclass costs
    three times as much to build. Treat it as a value all the same."""
    run: Callable[[], GenerateOutput] | None = None
    """Set for work of a plan that is not a request to the LLM and may block (running the tool
    calls an answer made, in a child process): the driver runs it off the event loop (a sync
    driver, in place), with no cache, limit or budget, and sends back what it returns in the
    call's place. ``chat`` is then only what a dry run shows; an estimate does not run it."""


CallPlan: TypeAlias = Generator[list[Call], list[GenerateOutput], GenerateOutput]
"""What :meth:`Task.plan` returns: it yields batches of calls that may run at the same time,
is sent their outputs (in the same order), and returns the row's output, one text per
generation."""

RowWork: TypeAlias = Generator[list[Call], list[GenerateOutput], list[Row]]
"""What :meth:`Step.work` returns: the calls it needs, then the output rows."""

Ask: TypeAlias = Callable[[list[Call]], list[GenerateOutput]]


def run_work(work: RowWork, ask: Ask | None = None) -> list[Row]:
    """Drive ``work`` to its end, answering its calls with ``ask``; the output rows."""
    try:
        calls = next(work)
        while True:
            if ask is None:
                raise RuntimeError("this step asked for LLM calls, but its driver has no LLM to ask")
            calls = work.send(ask(calls))
    except StopIteration as done:
        rows: list[Row] = done.value
        return rows


def lockstep(plans: list[CallPlan]) -> Generator[list[Call], list[GenerateOutput], list[GenerateOutput]]:
    """Several rows' plans as one: each round yields the next calls of every unfinished plan.

    So a batch of rows still makes one request batch per round (a sync LLM answers them in one
    ``generate``), and an async driver that runs one row per work sees the same calls.
    """
    results: dict[int, GenerateOutput] = {}
    pending: dict[int, list[Call]] = {}

    def advance(index: int, outputs: list[GenerateOutput] | None) -> None:
        plan = plans[index]
        try:
            pending[index] = next(plan) if outputs is None else plan.send(outputs)
        except StopIteration as done:
            results[index] = done.value

    for index in range(len(plans)):
        advance(index, None)
    while pending:
        waiting = list(pending.items())
        pending.clear()
        answers = iter((yield [call for _, calls in waiting for call in calls]))
        for index, calls in waiting:
            advance(index, [next(answers) for _ in calls])
    return [results[index] for index in range(len(plans))]
