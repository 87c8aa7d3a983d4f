"""Exceptions users catch, each built to say what went wrong and what to do next.

Every error taskloom raises on purpose derives from :class:`TaskloomError`, so a caller can tell
"taskloom refused this input" from a bug. Most also derive from the builtin that fits (a missing
column is a ``ValueError``, an unknown name a ``LookupError``) so generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class TaskloomError(Exception):
    """Base of every error taskloom raises deliberately."""


KNOWN_PACKAGES: dict[str, str] = {
    "openai": "taskloom-openai",
    "anthropic": "taskloom-anthropic",
    "llamacpp": "taskloom-llamacpp",
    "llamacpp-server": "taskloom-llamacpp",
    "huggingface": "taskloom-huggingface",
    "hub": "taskloom-huggingface",
    "push": "taskloom-huggingface",
    "report": "taskloom-report",
    "deduplicate": "taskloom-curate",
    "filter": "taskloom-curate",
    "format-sft": "taskloom-curate",
    "format-dpo": "taskloom-curate",
    "format-kto": "taskloom-curate",
    "ray": "taskloom-ray",
    "magpie": "taskloom-synth",
    "conversation": "taskloom-synth",
    "function-calling": "taskloom-synth",
    "sampler": "taskloom-synth",
}
"""Names this project's own plugin packages register, so an unknown one can say what to install."""


class UnknownNameError(TaskloomError, LookupError):
    """A task or LLM name that no installed package registers."""

    def __init__(
        self,
        kind: str,
        name: str,
        installed: Sequence[str],
        broken: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.name = name
        self.installed = list(installed)
        self.broken = list(broken)
        import difflib  # only for an unknown name, not at every start-up

        close = difflib.get_close_matches(name, self.installed, n=3, cutoff=0.5)
        lines = [f"No {kind} named {name!r} is installed."]
        if close:
            lines.append("Did you mean: " + ", ".join(repr(c) for c in close) + "?")
        lines.append(f"Installed {kind}s: " + (", ".join(self.installed) if self.installed else "(none)"))
        if broken:
            lines.append(
                "Plugins that could not be used may be the one you want (see `taskloom plugins`): " + "; ".join(broken)
            )
        package = KNOWN_PACKAGES.get(name)
        if package is not None and not broken:
            lines.append(f"{name!r} comes with the {package} package: pip install {package}")
        else:
            lines.append(f"Install the package that provides {name!r}, or check the spelling.")
        super().__init__("\n".join(lines))


class NoDefaultLLMError(TaskloomError, LookupError):
    """A task needs an LLM, none was given, and no default is configured or installed."""


class PluginError(TaskloomError):
    """A plugin could not be loaded: import error, bad hook, incompatible core, bad registration."""


class PluginConflictError(PluginError):
    """Two plugins registered the same name; neither wins silently."""

    def __init__(self, kind: str, name: str, first: str, second: str, disable: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        options = " or ".join(f"TASKLOOM_DISABLE_PLUGINS={d}" for d in disable if d)
        super().__init__(
            f"The {kind} name {name!r} is registered by two packages: {first} and {second}. "
            f"Uninstall one of them, or disable one with {options or 'TASKLOOM_DISABLE_PLUGINS'}."
        )


class MissingColumnError(TaskloomError, ValueError):
    """A row lacks a column that a step requires."""

    def __init__(
        self, step: str, column: str, row_columns: Iterable[str], row_index: int, input_name: str | None = None
    ) -> None:
        self.step = step
        self.column = column
        self.row_columns = sorted(row_columns)
        self.row_index = row_index
        own = input_name or column
        mapped = f" (mapped to its input {own!r})" if own != column else ""
        super().__init__(
            f"Step {step!r} requires the column {column!r}{mapped}, but row {row_index} has only "
            f"{self.row_columns}. Add the column to your data, or read the input from another "
            f"column with input_mappings={{{own!r}: '<your column>'}}."
        )


class GenerationError(TaskloomError):
    """A request that failed for good (after any retries).

    An LLM raises this for failures that belong to one input, not to the whole run: the batch
    goes on and the row records the error instead of a generation. Anything else an LLM raises
    (bad credentials, a bug) stops the run, because every other row would fail the same way.
    """


class RetryableError(GenerationError):
    """A transient failure (rate limit, overload, server error, timeout): worth another try.

    Providers raise a subclass; :class:`~taskloom.retry.RetryPolicy` retries it with backoff,
    waiting at least ``retry_after`` seconds when the server said so. When the retries run out
    it propagates as the :class:`GenerationError` it is, and the row records it.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.paced = False
        """Set when a rate limiter paces the retry itself: then only ``retry_after`` is waited, no backoff."""


class RateLimitError(RetryableError):
    """HTTP 429: too many requests or tokens for the account's limits."""


class OverloadedError(RetryableError):
    """The provider is overloaded (Anthropic's 529, a 503): not our fault, try later."""


class ServerError(RetryableError):
    """A 5xx or a malformed answer from the server."""


class RequestTimeoutError(RetryableError):
    """No complete answer within the configured timeout."""


class BadRequestError(GenerationError):
    """The provider refused this request as invalid (400, 404, 422): retrying cannot help.

    It belongs to one input (a prompt too long, a schema the model rejects), so the row records
    it and the run goes on.
    """


class RowInputError(GenerationError):
    """A row that cannot be made into a request (an image file that is not there, a value of the
    wrong kind): raised by a task's ``format_input``, it is recorded on that row, which is asked
    nothing, and the run goes on with the others."""


class AuthenticationError(TaskloomError):
    """Missing, wrong or unauthorised credentials (401, 403): every row would fail, so it stops."""


class QuotaExceededError(TaskloomError):
    """The account's quota or credit is used up (OpenAI's 429 ``insufficient_quota``).

    Not a rate limit: waiting does not help, so it is not retried, and every row would fail the
    same way, so the run stops (what it finished is written; a rerun resumes). A fallback LLM
    leaves such a member out and goes on with the next.
    """


class StopRequested(TaskloomError):
    """The run is stopping (a budget reached, a signal): this request was not started.

    Not a :class:`GenerationError`, so no row records it as a failure: the row is simply not
    finished, and a resumed run asks for it then.
    """


class BudgetExceededError(TaskloomError):
    """A run stopped at its ``budget_usd`` or ``max_requests``; ``result`` holds what it made.

    Every finished row was written and every generation cached; the same run with a larger
    budget resumes from the cache without paying again.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class JudgeUnreadableError(TaskloomError):
    """A judge's replies could not be read more often than its ``max_unreadable`` allows; ``result`` holds the run."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after writing what it had; ``result`` holds it.

    A ``KeyboardInterrupt``, so code that stops on Ctrl-C still does; its message says how to resume.
    """

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
