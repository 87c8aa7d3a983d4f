"""Two LLMs as one, so a conversation's simulated user and its assistant can be different models.

A task has one LLM, and the pipeline gives that LLM its concurrency limit, cache identity and
prices. :class:`Speakers` is that one LLM for a conversation with two speakers: each call names
its ``speaker``, goes to that member, and comes back labelled with the member that answered,
which is how the pipeline already prices a fallback's answers by the model that wrote them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from taskloom.plugin import LLM, AsyncLLM, ChatType, GenerateOutput, GenerationOptions

Speaker = Literal["assistant", "user"]


class Speakers(AsyncLLM):
    """The assistant's LLM and the simulated user's, each call sent to the one its ``speaker`` names."""

    registry_name: ClassVar[str | None] = None  # made by the conversation task, never named in a file
    spec_field: ClassVar[str | None] = None
    retries_each_request: ClassVar[bool] = True  # each member retries its own requests

    class Options(GenerationOptions):
        """The shared options, passed on to the member, and who speaks."""

        speaker: Speaker = Field(default="assistant", description="Which member answers this call.")

    assistant: LLM = Field(description="Writes the assistant's turns.")
    user: LLM = Field(description="Writes the simulated user's turns.")

    @property
    def model_name(self) -> str:
        return self.assistant.model_name

    def member(self, speaker: str) -> LLM:
        return self.user if speaker == "user" else self.assistant

    def completes_raw_text(self) -> bool:
        return self.assistant.completes_raw_text() and self.user.completes_raw_text()

    def requests_at_once(self) -> int:
        return self.assistant.requests_at_once() + self.user.requests_at_once()

    def dump(self) -> dict[str, Any]:
        return {"type": "speakers", "assistant": self.assistant.dump(), "user": self.user.dump()}

    def load(self) -> None:
        self.assistant.load()
        self.user.load()

    def is_loaded(self) -> bool:
        return self.assistant.is_loaded() and self.user.is_loaded()

    def unload(self) -> None:
        self.assistant.unload()
        self.user.unload()
        super().unload()

    async def aclose(self) -> None:
        for member in (self.assistant, self.user):
            if isinstance(member, AsyncLLM):
                await member.aclose()

    async def acomplete(self, input: ChatType, num_generations: int, options: GenerationOptions) -> GenerateOutput:
        given = options.model_dump(exclude_unset=True)
        speaker = str(given.pop("speaker", "assistant"))
        member = self.member(speaker)
        output = await member.agenerate_one(input, num_generations, **given)
        output["answered_by"] = [f"{member.type_name()}:{member.model_name}"] * num_generations
        return output
