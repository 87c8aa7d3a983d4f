"""Continuous batching: the answers in flight decoded together, each exactly as if it ran alone.

A loaded model answers ``parallel`` chats at once through one llama.cpp context with that many
sequences. Every step evaluates the next token of every answer in flight in one ``llama_decode``,
so the weights are read once for all of them; an answer that ends frees its sequence for the next
chat at once (continuous batching), and a chat that arrives joins at the next step.

Answers must not depend on what else is in flight (a resumed run, a cache and a test all expect
the same greedy or seeded answer whatever the concurrency). Measured on the bundled model, three
things keep it so, and all three are here:

* each sequence has a KV cache of its own (``kv_unified=False``): with one shared cache the cells
  of different chats interleave and 28 of 32 greedy answers changed;
* a prompt is evaluated alone, in its own ``llama_decode`` (in ``n_batch`` chunks, as
  llama-cpp-python evaluates it): a prompt evaluated in the same batch as other answers' tokens
  changed 4 of 32 answers at 8 in flight;
* each answer samples with a sampler chain of its own (llama-cpp-python's chain: penalties,
  grammar, then greedy, or top-k, typical, top-p, min-p, temperature and a seeded draw), which
  only ever sees its own tokens.

Single generation tokens of many sequences in one batch gave every answer bit for bit (32 of 32
at 1, 4, 8 and 16 in flight, identical to llama-cpp-python's ``create_chat_completion``).

Everything runs on the process's llama.cpp thread (see :func:`taskloom_llamacpp.models.on_llama_thread`):
the decoding loop is one job there, started when a chat arrives and ended when none is left.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from taskloom.plugin import BadRequestError

if TYPE_CHECKING:
    import llama_cpp
    from llama_cpp import _internals

# llama-cpp-python's defaults for create_chat_completion, so an answer is the one it would give.
CHAT_DEFAULTS: dict[str, float] = {
    "temperature": 0.2,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
}
PENALTY_LAST_N = 64  # llama_cpp.Llama's last_n_tokens_size


class Completion(NamedTuple):
    """One answer: its text, the tokens it read and wrote, and why it ended ("stop" or "length")."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass(eq=False)
class Request:
    """One answer to write: a tokenized prompt and how to sample it."""

    prompt: list[int]
    max_tokens: int | None
    seed: int
    sampling: dict[str, float] = field(default_factory=dict)
    grammar: Any = None
    stop: list[str] = field(default_factory=list)
    future: Future[Completion] = field(default_factory=Future)
    abandoned: bool = False
    """Set by a caller that stopped waiting: the answer is dropped at its next token."""

    # while it is decoded
    seq: int = -1
    sampler: Any = None
    tokens: list[int] = field(default_factory=list)
    position: int = 0
    logits_at: int = 0
    limit: int = 0


class Decoder:
    """``slots`` sequences of one model, decoded together on the llama.cpp thread."""

    def __init__(self, llama: llama_cpp.Llama, slots: int, n_ctx: int, run: Any) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._llama = llama
        self._llama_cpp = llama_cpp
        self._internals = _internals
        self.slots = slots
        self.n_ctx = n_ctx
        """Tokens one answer may use, prompt included (each sequence has a cache this long)."""
        base = llama.context_params
        params = llama_cpp.llama_context_default_params()
        for name in ("n_batch", "n_ubatch", "n_threads", "n_threads_batch", "flash_attn_type", "type_k", "type_v"):
            setattr(params, name, getattr(base, name))
        params.swa_full = base.swa_full
        params.n_ctx = n_ctx * slots
        params.n_seq_max = slots
        params.kv_unified = False
        self._context = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._context.ctx)
        self._n_batch = int(base.n_batch)
        self._batch = _internals.LlamaBatch(n_tokens=max(self._n_batch, slots), embd=0, n_seq_max=1, verbose=False)
        self._vocab = llama._model.vocab
        self._n_vocab = llama.n_vocab()
        self._run = run  # runs a callable as a job on the llama.cpp thread, without waiting
        self._lock = threading.Lock()
        self._pending: deque[Request] = deque()
        self._looping = False
        self._closed = False

    # -- from any thread -------------------------------------------------------------------

    def submit(self, request: Request) -> Future[Completion]:
        """Queue ``request``; its future gets the :class:`Completion` (or the error)."""
        if len(request.prompt) >= self.n_ctx:
            request.future.set_exception(
                BadRequestError(
                    f"Requested tokens ({len(request.prompt)}) exceed context window of {self.n_ctx}; "
                    f"shorten the input or raise n_ctx (now {self.n_ctx})."
                )
            )
            return request.future
        with self._lock:
            if self._closed:
                raise RuntimeError("this model was unloaded")
            self._pending.append(request)
            start = not self._looping
            self._looping = True
        if start:
            self._run(self._loop)
        return request.future

    def busy(self) -> bool:
        """Whether its loop is running on the llama.cpp thread (answers in flight or queued)."""
        with self._lock:
            return self._looping

    def close(self) -> None:
        """Free the context; call it only while its loop is not running (see :meth:`busy`)."""
        with self._lock:
            self._closed = True
        self._batch.close()  # type: ignore[no-untyped-call]
        self._context.close()  # type: ignore[no-untyped-call]

    # -- on the llama.cpp thread ---------------------------------------------------------------

    def _loop(self) -> None:
        active: dict[int, Request] = {}
        free = list(range(self.slots - 1, -1, -1))
        try:
            while True:
                while free:
                    with self._lock:
                        if not self._pending:
                            if not active:
                                self._looping = False
                                return
                            break
                        request = self._pending.popleft()
                    if not request.future.set_running_or_notify_cancel():
                        continue  # abandoned before it started: its caller cancelled it
                    seq = free.pop()
                    try:
                        if self._start(request, seq):
                            free.append(seq)
                        else:
                            active[seq] = request
                    except BaseException as error:
                        free.append(seq)
                        request.future.set_exception(error)
                if active:
                    self._step(active, free)
        except BaseException as error:  # a failed decode: every answer in flight gets the error
            with self._lock:
                self._looping = False
                waiting = list(self._pending)
                self._pending.clear()
            for request in [*active.values(), *waiting]:
                if not request.future.done():
                    request.future.set_exception(error)
            raise

    def _start(self, request: Request, seq: int) -> bool:
        """Evaluate the prompt alone into sequence ``seq`` and sample the first token; True if that ended it."""
        request.seq = seq
        request.sampler = self._sampler(request)
        request.limit = self.n_ctx - len(request.prompt)
        if request.max_tokens is not None:
            request.limit = min(request.limit, request.max_tokens)
        self._llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        prompt = request.prompt
        for start in range(0, len(prompt), self._n_batch):
            self._clear()
            chunk = prompt[start : start + self._n_batch]
            for offset, token in enumerate(chunk):
                last = start + offset == len(prompt) - 1
                index = self._add(token, start + offset, seq, last)
            self._context.decode(self._batch)
        request.position = len(prompt)
        request.logits_at = index
        return self._sample(request)

    def _step(self, active: dict[int, Request], free: list[int]) -> None:
        """One token more for every answer in flight, in one decode."""
        self._clear()
        for request in list(active.values()):
            if request.abandoned:
                del active[request.seq]
                free.append(request.seq)
                request.sampler.close()
                request.future.set_exception(CompletionAbandoned("the caller stopped waiting"))
                continue
            request.logits_at = self._add(request.tokens[-1], request.position, request.seq, True)
            request.position += 1
        if not active:
            return
        self._context.decode(self._batch)
        for request in list(active.values()):
            if self._sample(request):
                del active[request.seq]
                free.append(request.seq)

    def _sample(self, request: Request) -> bool:
        """Sample the next token from the last decode; True (and the future set) if the answer ended."""
        token = request.sampler.sample(self._context, request.logits_at)
        finish: str | None = None
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            finish = "stop"
        else:
            request.tokens.append(token)
            if request.stop and self._stopped(request):
                finish = "stop"
            elif len(request.tokens) >= request.limit:
                finish = "length"
        if finish is None:
            return False
        request.future.set_result(self._completion(request, finish))
        return True

    def _stopped(self, request: Request) -> bool:
        text = self._text(request)
        return any(stop in text for stop in request.stop)

    def _text(self, request: Request) -> str:
        raw: bytes = self._llama.detokenize(request.tokens, prev_tokens=request.prompt)
        return raw.decode("utf-8", errors="ignore")

    def _completion(self, request: Request, finish: str) -> Completion:
        text = self._text(request)
        if request.stop:
            cuts = [text.index(stop) for stop in request.stop if stop in text]
            if cuts:
                text = text[: min(cuts)]
        request.sampler.close()
        return Completion(text, len(request.prompt), len(request.tokens), finish)

    def _sampler(self, request: Request) -> _internals.LlamaSampler:
        """llama-cpp-python's sampler chain for these options (``Llama._init_sampler``), for one answer."""
        options = {**CHAT_DEFAULTS, **request.sampling}
        sampler = self._internals.LlamaSampler()  # type: ignore[no-untyped-call]
        sampler.add_penalties(
            n_vocab=self._n_vocab,
            penalty_last_n=PENALTY_LAST_N,
            penalty_repeat=options["repeat_penalty"],
            penalty_freq=0.0,
            penalty_present=0.0,
        )
        if request.grammar is not None:
            sampler.add_grammar(self._llama._model, request.grammar)
        temperature = options["temperature"]
        if temperature == 0:
            sampler.add_greedy()  # type: ignore[no-untyped-call]
        else:
            sampler.add_top_k(int(options["top_k"]))
            sampler.add_typical(1.0, 1)
            sampler.add_top_p(options["top_p"], 1)
            sampler.add_min_p(options["min_p"], 1)
            sampler.add_temp(temperature)
            sampler.add_dist(request.seed)
        return sampler

    def _clear(self) -> None:
        self._batch.batch.n_tokens = 0

    def _add(self, token: int, position: int, seq: int, logits: bool) -> int:
        batch = self._batch.batch
        index = int(batch.n_tokens)
        batch.token[index] = token
        batch.pos[index] = position
        batch.seq_id[index][0] = seq
        batch.n_seq_id[index] = 1
        batch.logits[index] = logits
        batch.n_tokens = index + 1
        return index


class CompletionAbandoned(Exception):
    """An answer dropped before its end because its caller stopped waiting for it."""
