"""Local models on a cluster: each loaded once, in a model actor, and shared by every shard worker.

A model that runs on the machine (llama.cpp here; the same shape serves vLLM or transformers)
is too big to load in every shard worker, and its accelerator is the thing to keep busy. So the
driver starts a pool per local LLM: ``model_actors`` actors, each holding the model loaded, with
the resources it declares (``model_num_gpus``, ``model_resources``, or a placement group of
``model_bundles`` for a model split over several devices). A router actor in front of them hands
each call to the actor with the fewest calls in flight. In the shard workers, the task's LLM is
replaced by a :class:`ServedLLM` that sends its calls to the router; it answers as the model it
stands in for (:meth:`LLM.answers_as`), so the cache keys are the local run's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ConfigDict

from taskloom.plugin import LLM, Chat, ChatType, GenerateOutput, GenerationError, GenerationOptions, failed_output


class ServedLLM(LLM):
    """Stands in, in a shard worker, for a local model served by the model actors."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runs_locally: ClassVar[bool] = True

    inner: LLM
    """The model it stands in for (never loaded here): its name, options and cache identity."""
    router: Any
    """The pool's router actor."""
    at_once: int = 1

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @classmethod
    def standing_in_for(cls, inner: LLM, router: Any, at_once: int) -> ServedLLM:
        # Built without validation: its generation_kwargs are the model's own, checked by its Options.
        return cls.model_construct(
            inner=inner, router=router, at_once=at_once, generation_kwargs=inner.generation_kwargs
        )

    def answers_as(self) -> LLM:
        return self.inner.answers_as()

    def completes_raw_text(self) -> bool:
        return self.inner.completes_raw_text()

    def reads_images(self) -> bool:
        return self.inner.reads_images()

    def options(self, overrides: Any = None) -> GenerationOptions:
        return self.inner.options(overrides)

    def accepts(self, option: str) -> bool:
        return self.inner.accepts(option)

    def calls_tools(self) -> bool:
        return self.inner.calls_tools()

    def render_chat(self, messages: Chat) -> str | None:
        """The served model's template, rendered by one of its actors (Magpie reads it once per task)."""
        import ray

        text: str | None = ray.get(self.router.render_chat.remote(messages))
        return text

    def dump(self) -> dict[str, Any]:
        return self.inner.dump()

    def requests_at_once(self) -> int:
        return self.at_once

    def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        import ray

        kwargs = options.model_dump(exclude_unset=True)
        return list(ray.get([self.router.generate.remote(chat, num_generations, kwargs) for chat in inputs]))

    async def agenerate_one(
        self, input: ChatType, num_generations: int = 1, *, on_retry: Any = None, **kwargs: Any
    ) -> GenerateOutput:
        import ray

        try:
            output: GenerateOutput = await self.router.generate.remote(input, num_generations, kwargs)
        except ray.exceptions.RayError as error:  # the model actor died mid-call: recorded on the row
            return failed_output(num_generations, GenerationError(f"{self.model_name}: model actor failed: {error}"))
        return output


class ModelActor:
    """One copy of a local model, loaded when the actor starts (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm
        llm.load()

    async def generate(self, chat: ChatType, num_generations: int, kwargs: dict[str, Any]) -> GenerateOutput:
        return await self.llm.agenerate_one(chat, num_generations, **kwargs)

    def render_chat(self, messages: Chat) -> str | None:
        return self.llm.render_chat(messages)

    def where(self) -> dict[str, Any]:
        """The node and the resources Ray gave this actor (for tests and the docs' checks)."""
        import ray

        context = ray.get_runtime_context()
        return {"node": context.get_node_id(), "resources": context.get_assigned_resources()}  # type: ignore[no-untyped-call]


class ModelRouter:
    """Sends each call to the model actor with the fewest calls in flight (an async actor)."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors
        self.load = [0] * len(actors)

    async def generate(self, chat: ChatType, num_generations: int, kwargs: dict[str, Any]) -> GenerateOutput:
        index = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[index] += 1
        try:
            output: GenerateOutput = await self.actors[index].generate.remote(chat, num_generations, kwargs)
        finally:
            self.load[index] -= 1
        return output

    async def render_chat(self, messages: Chat) -> str | None:
        text: str | None = await self.actors[0].render_chat.remote(messages)
        return text

    def loads(self) -> list[int]:
        return list(self.load)
