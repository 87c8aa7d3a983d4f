"""Scripted LLMs: deterministic stand-ins that answer from a list or a function.

They are real :class:`LLM` / :class:`AsyncLLM` subclasses, so a task tested with them runs the
same code paths as in production; they record every call so tests can assert on what was asked.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr

from taskloom.llms import LLM, AsyncLLM
from taskloom.llms.inputs import text_of
from taskloom.llms.options import GenerationOptions
from taskloom.typing import ChatType, GenerateOutput

Reply = str | None | BaseException
ReplyFunction = Callable[[ChatType, int], Reply]


def _count_tokens(text: str) -> int:
    # A stand-in for a tokenizer: whitespace-separated words.
    return len(text.split())


class _Script:
    """Shared reply logic: from ``reply`` (a function) or cycling through ``replies``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cycle: itertools.cycle[Reply] | None = None
        self.calls: list[dict[str, Any]] = []

    def __reduce__(self) -> tuple[type[_Script], tuple[()]]:
        # A copy sent to another process (a Ray worker) starts its script afresh, as a new LLM would.
        return (_Script, ())


class _ScriptedMixin:
    model: str
    replies: list[Any] | None
    reply: ReplyFunction | None
    raw_text: bool
    _script: _Script

    def completes_raw_text(self) -> bool:
        return self.raw_text

    def _replies(self, script: _Script) -> Callable[[ChatType, int], Reply]:
        """The reply source for one batch; private attributes are looked up once, not per row."""
        if self.reply is not None:
            return self.reply
        with script.lock:
            if script.cycle is None:
                script.cycle = itertools.cycle(self.replies or ["ok"])
        cycle = script.cycle

        def from_list(chat: ChatType, index: int) -> Reply:
            with script.lock:
                return next(cycle)

        return from_list

    def _answer_all(
        self, inputs: Sequence[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        script = self._script
        next_reply = self._replies(script)
        outputs: list[GenerateOutput] = []
        kwargs = options.model_dump(exclude_unset=True)  # the options this call was given
        for chat in inputs:
            script.calls.append({"input": chat, "num_generations": num_generations, "kwargs": kwargs})
            prompt_tokens = (
                _count_tokens(chat)
                if isinstance(chat, str)
                else sum(_count_tokens(text_of(m["content"])) for m in chat)
            )
            texts: list[str | None] = []
            for index in range(num_generations):
                reply = next_reply(chat, index)
                if isinstance(reply, BaseException):
                    raise reply
                texts.append(reply)
            outputs.append(
                {
                    "generations": texts,
                    "statistics": {
                        "input_tokens": [prompt_tokens] * num_generations,
                        "output_tokens": [0 if t is None else _count_tokens(t) for t in texts],
                    },
                }
            )
        return outputs

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every input asked so far: ``{"input", "num_generations", "kwargs"}``, in order."""
        return self._script.calls


_REPLIES = Field(
    default=None,
    description="Replies to cycle through; None is 'no text', an exception instance is raised.",
)
_RAW_TEXT = Field(
    default=True,
    description="Whether it takes raw text prompts as well as chats; False stands in for a chat-only API.",
)
_REPLY = Field(
    default=None,
    exclude=True,
    repr=False,
    description="A function (chat, generation index) -> reply; overrides replies.",
)


class ScriptedOptions(GenerationOptions):
    """The shared options, recorded with each call; structured output is not one of them."""

    structured_output: None = Field(
        default=None, description="Not supported: a scripted reply is whatever the script says."
    )


class ScriptedLLM(_ScriptedMixin, LLM):
    """A sync LLM for tests that answers from a list of replies or a function."""

    Options = ScriptedOptions

    registry_name: ClassVar[str | None] = "scripted"

    model: str = Field(default="scripted", description="The model name it reports.")
    replies: list[Any] | None = _REPLIES
    reply: ReplyFunction | None = _REPLY
    raw_text: bool = _RAW_TEXT
    _script: _Script = PrivateAttr(default_factory=_Script)

    @property
    def model_name(self) -> str:
        return self.model

    def complete(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        return self._answer_all(inputs, num_generations, options)


class ScriptedAsyncLLM(_ScriptedMixin, AsyncLLM):
    """An async LLM for tests: like :class:`ScriptedLLM`, with an optional delay per request.

    A reply that is a :class:`~taskloom.errors.GenerationError` instance fails only its own input, as a
    provider's exhausted retries would.
    """

    Options = ScriptedOptions

    registry_name: ClassVar[str | None] = "scripted-async"

    model: str = Field(default="scripted-async", description="The model name it reports.")
    replies: list[Any] | None = _REPLIES
    reply: ReplyFunction | None = _REPLY
    raw_text: bool = _RAW_TEXT
    delay: float = Field(default=0.0, ge=0, description="Seconds each request takes.")
    _script: _Script = PrivateAttr(default_factory=_Script)
    _in_flight: int = PrivateAttr(default=0)
    _max_in_flight: int = PrivateAttr(default=0)

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def max_in_flight(self) -> int:
        """The most requests that were ever in flight at once."""
        return self._max_in_flight

    async def acomplete(self, input: ChatType, num_generations: int, options: GenerationOptions) -> GenerateOutput:
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._answer_all([input], num_generations, options)[0]
        finally:
            self._in_flight -= 1


__all__ = ["ScriptedAsyncLLM", "ScriptedLLM"]
