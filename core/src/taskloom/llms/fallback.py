"""FallbackLLM: several LLMs (providers, or keys of one provider) as one, so an outage is not a stop.

    llm: {type: fallback, llms: ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]}

Each request goes to the first member that is not resting. A member that still refuses after its
own retries (a rate limit, an overload, a 5xx, a timeout), or that asks to wait longer than
``failover_wait`` before a retry (an exhausted quota answers 429 with a long reset), hands the
request to the next one and rests for ``cooldown`` seconds (or as long as it asked), so the run
keeps its pace instead of paying every member's retries on every row. A member whose key is
refused (401/403) or whose quota is used up is left out for the rest of the run. A request the
provider refuses as invalid (400) is not retried elsewhere: it would be refused there too, and
its error belongs on its row.

The cache knows the fallback by its own identity (its members in order), not by the member that
answered, so a resumed run finds every generation whichever member wrote it. Which member
answered each generation is recorded on the row (``answered_by_<task>`` in its metadata) and
prices each request.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, field_validator

from taskloom.errors import AuthenticationError, GenerationError, QuotaExceededError, RetryableError
from taskloom.llms.async_llm import _ON_RETRY, AsyncLLM, OnRetry, error_text
from taskloom.llms.base import LLM
from taskloom.llms.options import GenerationOptions
from taskloom.llms.outputs import token_counts
from taskloom.typing import ChatType, GenerateOutput

logger = logging.getLogger("taskloom.llms")

FAILOVER_ERRORS = ("RateLimitError", "OverloadedError", "ServerError", "RequestTimeoutError", "LongWaitError")
"""Errors (as recorded on an output) that send a request on to the next member."""


class LongWaitError(GenerationError):
    """A member asked to wait longer than ``failover_wait`` before trying again: the next member answers."""


class FallbackLLM(AsyncLLM):
    """Members tried in order for each request; the first that answers wins (see the module docstring)."""

    registry_name: ClassVar[str | None] = "fallback"
    spec_field: ClassVar[str | None] = None
    retries_each_request: ClassVar[bool] = True  # each member retries its own requests

    class Options(GenerationOptions):
        """The options every member shares; each member checks them against its own ``Options`` too."""

    llms: list[LLM] = Field(
        min_length=1,
        description="The members, in order of preference: LLMs, specs ('openai:gpt-4o-mini') or tables with 'type'.",
    )
    failover_wait: float = Field(
        default=10.0,
        ge=0,
        description="Seconds of Retry-After beyond which a member is skipped at once instead of waited for.",
    )
    cooldown: float = Field(
        default=30.0, ge=0, description="Seconds a member that failed over rests before it is tried first again."
    )

    _resting: dict[int, float] = PrivateAttr(default_factory=dict)
    _refused: set[int] = PrivateAttr(default_factory=set)

    @field_validator("llms", mode="before")
    @classmethod
    def _build_members(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        from taskloom.config import llm_from_spec

        members = []
        for index, item in enumerate(value):
            if isinstance(item, LLM):
                members.append(item)
                continue
            try:
                members.append(llm_from_spec(item))
            except Exception as error:  # an unknown name, a bad field: say which member
                raise ValueError(f"fallback member {index} ({item!r}) cannot be built: {error}") from None
        return members

    @property
    def model_name(self) -> str:
        return self.llms[0].model_name

    def completes_raw_text(self) -> bool:
        """Only if every member does: any of them may be the one that answers."""
        return all(member.completes_raw_text() for member in self.llms)

    def reads_images(self) -> bool:
        """Only if every member does: any of them may be the one that answers."""
        return all(member.reads_images() for member in self.llms)

    def member_label(self, index: int) -> str:
        """How rows and messages name a member: its registry name and model (``openai:gpt-4o-mini``)."""
        member = self.llms[index]
        return f"{member.type_name()}:{member.model_name}"

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["llms"] = [member.dump() for member in self.llms]
        return data

    # -- lifecycle ---------------------------------------------------------------------------------

    def load(self) -> None:
        for member in self.llms:
            member.load()

    def unload(self) -> None:
        for member in self.llms:
            member.unload()
        super().unload()

    async def aclose(self) -> None:
        for member in self.llms:
            if isinstance(member, AsyncLLM):
                await member.aclose()

    # -- requests ----------------------------------------------------------------------------------

    def _order(self) -> list[int]:
        """Members to try, the rested ones first in their order, the resting ones after them."""
        now = time.monotonic()
        usable = [i for i in range(len(self.llms)) if i not in self._refused]
        awake = [i for i in usable if self._resting.get(i, 0.0) <= now]
        return awake + [i for i in usable if i not in awake]

    async def acomplete(self, input: ChatType, num_generations: int, options: GenerationOptions) -> GenerateOutput:
        kwargs = options.model_dump(exclude_unset=True)
        n = num_generations
        texts: list[str | None] = [None] * n
        tokens_in = [0] * n
        tokens_out = [0] * n
        errors: list[str | None] = ["no fallback member could be asked"] * n
        answered_by: list[str | None] = [None] * n
        cached = 0
        pending = list(range(n))
        for index in self._order():
            if not pending:
                break
            output = await self._ask_member(index, input, len(pending), kwargs)
            if output is None:
                continue
            cached += int(output.get("statistics", {}).get("cached_input_tokens") or 0)
            got_in, got_out = token_counts(output.get("statistics"), len(pending))
            generations = output["generations"]
            member_errors = output.get("errors") or [output.get("error")] * len(pending)
            still = []
            for position, slot in enumerate(pending):
                error = member_errors[position] if position < len(member_errors) else None
                tokens_in[slot] += got_in[position] or 0
                tokens_out[slot] += got_out[position] or 0
                if error and error.startswith(FAILOVER_ERRORS):
                    errors[slot] = f"{self.member_label(index)}: {error}"
                    still.append(slot)
                    continue
                texts[slot] = generations[position] if position < len(generations) else None
                errors[slot] = error
                answered_by[slot] = self.member_label(index)
            if still:
                self._rest(index, output)
            pending = still
        result: GenerateOutput = {
            "generations": texts,
            "statistics": {"input_tokens": tokens_in, "output_tokens": tokens_out},
            "answered_by": answered_by,
        }
        if cached:
            result["statistics"]["cached_input_tokens"] = cached
        if all(errors):
            result["error"] = "every fallback member failed: " + "; ".join(sorted({e for e in errors if e}))
        elif any(errors):
            result["errors"] = errors
        return result

    async def _ask_member(
        self, index: int, input: ChatType, count: int, kwargs: dict[str, Any]
    ) -> GenerateOutput | None:
        member = self.llms[index]
        outer = _ON_RETRY.get()
        try:
            return await member.agenerate_one(input, count, on_retry=self._watching(outer), **kwargs)
        except (AuthenticationError, QuotaExceededError) as error:
            self._refused.add(index)
            logger.warning("fallback: %s cannot be used and is left out: %s", self.member_label(index), error)
            if len(self._refused) == len(self.llms):
                raise
            return None

    def _watching(self, outer: OnRetry | None) -> OnRetry:
        """Report retries to whoever asked, and give up on a member that asks for a long wait."""
        limit = self.failover_wait

        def on_retry(error: RetryableError, attempt: int, wait: float) -> None:
            if outer is not None:
                outer(error, attempt, wait)
            if error.retry_after is not None and error.retry_after > limit:
                raise LongWaitError(f"asked to wait {error.retry_after:.0f} s ({error_text(error)})")

        return on_retry

    def _rest(self, index: int, output: GenerateOutput) -> None:
        rest = self.cooldown
        self._resting[index] = time.monotonic() + rest
        logger.warning(
            "fallback: %s failed (%s); the next member answers, and it rests %.0f s",
            self.member_label(index),
            (output.get("error") or next((e for e in output.get("errors") or [] if e), ""))[:200],
            rest,
        )


__all__ = ["FAILOVER_ERRORS", "FallbackLLM", "LongWaitError"]
