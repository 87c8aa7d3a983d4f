"""LlamaCppLLM with the real bundled model: answers, seeds, statistics, sharing, threads, failures."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import QUICK
from taskloom_llamacpp import LlamaCppLLM, bundled_model_path
from taskloom_llamacpp.models import LLAMA_THREAD_NAME, ModelLoadError, loaded_models, on_llama_thread

from taskloom import get_llm, load_llm
from taskloom.testing.conformance import LLMConformance

# At temperature 0 the 135M model answers this wording right ("The capital city of Spain is Madrid."),
# which it does only with its own chat template applied; plainer wordings get it wrong.
CAPITAL = [{"role": "user", "content": "What's the capital city of Spain? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Tell me a very short story about a cat."}]
# Asked twice in a row with the same seed, this got two different answers (even at temperature 0)
# before each reproducible completion started from an empty evaluated state: llama-cpp-python
# re-evaluated the prompt's last token on its own, which llama.cpp computes slightly differently.
FRIENDSHIP = [{"role": "user", "content": "Tell me a very short story about friendship."}]
# At temperature 0 this runs to any max_new_tokens given (1,024 tokens took 12 s on 2 cores).
ROME = [{"role": "user", "content": "Write a very long essay about the history of Rome."}]


class TestConformance(LLMConformance):
    generation_kwargs = {"max_new_tokens": 16}

    @pytest.fixture
    def llm(self) -> LlamaCppLLM:
        return LlamaCppLLM()


def test_registered_as_llamacpp() -> None:
    llm = get_llm("llamacpp")
    assert isinstance(llm, LlamaCppLLM)
    assert llm.model_name == "SmolLM2-135M-Instruct.Q4_1"
    assert bundled_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_answers_a_question(llm: LlamaCppLLM) -> None:
    [output] = llm.generate([CAPITAL], max_new_tokens=24, temperature=0.0)
    assert "Madrid" in output["generations"][0]


def test_token_statistics(llm: LlamaCppLLM) -> None:
    [output] = llm.generate([CAPITAL], num_generations=2, max_new_tokens=8, temperature=1.0)
    stats = output["statistics"]
    assert all(n > 5 for n in stats["input_tokens"]), "the chat template adds tokens around the question"
    assert all(0 < n <= 8 for n in stats["output_tokens"])


def test_seed_makes_runs_reproducible(llm: LlamaCppLLM) -> None:
    kwargs: dict[str, Any] = {"max_new_tokens": 24, "temperature": 1.0, "seed": 1234}
    first = llm.generate([STORY], num_generations=2, **kwargs)[0]["generations"]
    other = LlamaCppLLM(n_ctx=2048)  # another instance, another context: same answers
    try:
        again = other.generate([STORY], num_generations=2, **kwargs)[0]["generations"]
    finally:
        other.unload()
    assert first == again
    assert first[0] != first[1], "generation i samples with seed + i, so the two differ"


def test_without_seed_samples_differ(llm: LlamaCppLLM) -> None:
    generations = llm.generate([STORY], num_generations=3, max_new_tokens=24, temperature=1.0)[0]["generations"]
    assert len(set(generations)) > 1


def test_generation_kwargs_on_the_llm_apply_to_direct_calls() -> None:
    llm = LlamaCppLLM(generation_kwargs={"max_new_tokens": 3})
    try:
        [output] = llm.generate([STORY])  # loads on first use
        assert output["statistics"]["output_tokens"] == [3]
    finally:
        llm.unload()


def test_unknown_generation_kwarg_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        LlamaCppLLM(generation_kwargs={"max_tokens": 3})


def test_loaded_once_per_process() -> None:
    a, b, c = LlamaCppLLM(), LlamaCppLLM(), LlamaCppLLM(n_ctx=1024)
    for llm in (a, b, c):
        llm.load()
    try:
        assert a._model().llama is b._model().llama
        assert a._model().llama is not c._model().llama
        assert len(loaded_models()) == 2
        a.unload()
        assert b.generate([CAPITAL], **QUICK)[0]["generations"][0], "the other holder still works"
    finally:
        for llm in (a, b, c):
            llm.unload()
    assert loaded_models() == []


def test_safe_from_many_threads(llm: LlamaCppLLM) -> None:
    # FRIENDSHIP: when two threads ask it one after the other, the second got another answer
    # (see test_reproducible_answer_does_not_depend_on_the_call_before).
    expected = llm.generate([CAPITAL, FRIENDSHIP], seed=7, **QUICK)
    results: list[Any] = [None] * 6
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            mine = LlamaCppLLM() if index % 2 else llm  # the same instance and fresh ones
            results[index] = mine.generate([CAPITAL, FRIENDSHIP], seed=7, **QUICK)
            if mine is not llm:
                mine.unload()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert all(r == expected for r in results), "concurrent calls gave different answers than one at a time"


def _on_a_fresh_model(chat: list[dict[str, str]], **kwargs: Any) -> str:
    """The answer of a model loaded for this one call, so that nothing was evaluated before it."""
    fresh = LlamaCppLLM(n_ctx=2048)  # other load options than the `llm` fixture's: not the shared model
    try:
        return fresh.generate([chat], **kwargs)[0]["generations"][0]
    finally:
        fresh.unload()


@pytest.mark.parametrize(
    ("case", "sampling"),
    [
        ("same chat twice", {"temperature": 1.0, "seed": 7}),
        ("follow-up right after its first turn", {"temperature": 1.0, "seed": 7}),
        ("same chat twice", {"temperature": 0.0}),
    ],
)
def test_reproducible_answer_does_not_depend_on_the_call_before(
    llm: LlamaCppLLM, case: str, sampling: dict[str, Any]
) -> None:
    """What the shared model evaluated last must not change a seeded (or greedy) answer.

    Threads and tasks share one model, so the call before is whoever got the lock first. Both
    cases made llama-cpp-python reuse evaluated tokens: the whole prompt (replaying its last token
    alone), or a first turn's prompt and answer (tokens generated one at a time).
    """
    kwargs = {"max_new_tokens": 24, **sampling}
    before = FRIENDSHIP if case == "same chat twice" else STORY
    answer_before = llm.generate([before], **kwargs)[0]["generations"][0]
    assert answer_before is not None
    chat = before
    if case != "same chat twice":
        follow_up = {"role": "user", "content": "Now give it a title."}
        chat = [*before, {"role": "assistant", "content": answer_before}, follow_up]
    expected = _on_a_fresh_model(chat, **kwargs)
    assert llm.generate([chat], **kwargs)[0]["generations"][0] == expected, f"{case}: differs from a fresh model"


def test_safe_from_many_asyncio_tasks(llm: LlamaCppLLM) -> None:
    async def main() -> list[Any]:
        return await asyncio.gather(*(llm.agenerate_batch([CAPITAL], seed=3, **QUICK) for _ in range(4)))

    results = asyncio.run(main())
    assert len({r[0]["generations"][0] for r in results}) == 1


def test_every_completion_runs_on_the_one_llama_thread(llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever asks, llama.cpp computes on one thread: OpenMP keeps a team of helper threads per
    calling thread and throttles once they outnumber the cores. Asked from asyncio's executor
    threads, as a pipeline asks, the bundled model made half the tokens per second on 2 cores.
    """
    from taskloom_llamacpp.decoding import Decoder

    ran_on: list[str] = []
    start = Decoder._start

    def recording(self: Decoder, *args: Any) -> Any:  # each answer's prompt evaluation
        ran_on.append(threading.current_thread().name)
        return start(self, *args)

    monkeypatch.setattr(Decoder, "_start", recording)
    llm.generate([CAPITAL], **QUICK)  # from the main thread
    threads = [threading.Thread(target=llm.generate, args=([CAPITAL],), kwargs=QUICK) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def from_a_loop() -> None:  # through asyncio.to_thread, each call on some executor thread
        await asyncio.gather(*(llm.agenerate_batch([CAPITAL], **QUICK) for _ in range(3)))

    asyncio.run(from_a_loop())
    assert ran_on == [LLAMA_THREAD_NAME] * 6


def test_a_job_that_asks_again_runs_in_place() -> None:
    assert on_llama_thread(lambda: on_llama_thread(lambda: threading.current_thread().name)) == LLAMA_THREAD_NAME


def test_an_interrupted_caller_stops_its_completion(llm: LlamaCppLLM) -> None:
    """Ctrl-C while a caller waits stops the completion at its next token, as it did when completions
    ran on the caller's own thread: the next call does not wait for an answer nobody will read."""

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    try:
        timer.start()
        with pytest.raises(Interrupted):
            llm.generate([ROME], max_new_tokens=1024, temperature=0.0)
        interrupted = time.monotonic() - started
        [output] = llm.generate([CAPITAL], **QUICK)
        answered = time.monotonic() - started
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert interrupted < 3, "the caller waited for the whole answer"
    assert answered - interrupted < 3, "the next call waited for the interrupted answer to finish"
    assert "Madrid" in output["generations"][0], "the model answers as usual after a stop"


def test_too_long_input_fails_only_its_row() -> None:
    llm = LlamaCppLLM(n_ctx=256)
    long_chat = [{"role": "user", "content": "word " * 400}]
    try:
        short, long = llm.generate([CAPITAL, long_chat], max_new_tokens=4)
    finally:
        llm.unload()
    assert short["generations"][0]
    assert long["generations"] == [None]
    assert "n_ctx" in long["error"]


def test_missing_model_file_names_the_path(tmp_path: Path) -> None:
    llm = LlamaCppLLM(model_path=str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadError, match=r"nope\.gguf"):
        llm.load()
    assert llm.model_name == "nope"


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("not a model")
    with pytest.raises(ModelLoadError, match="GGUF"):
        LlamaCppLLM(model_path=str(bogus)).load()


def test_any_gguf_path_and_the_file_chat_template(tmp_path: Path) -> None:
    copy = tmp_path / "my-model.gguf"
    copy.symlink_to(bundled_model_path())
    llm = get_llm("llamacpp", model_path=str(copy))
    try:
        [output] = llm.generate([CAPITAL], **QUICK)
        assert llm.model_name == "my-model"
        assert "Madrid" in output["generations"][0]
        llama = llm._model().llama
        assert "tokenizer.chat_template" in llama.metadata
        assert llama.chat_format != "llama-2", "fell back to a template the file does not carry"
    finally:
        llm.unload()


def test_copies_and_pickles_load_their_own(llm: LlamaCppLLM) -> None:
    clone = pickle.loads(pickle.dumps(llm))
    copy = llm.model_copy(deep=True)
    for other in (clone, copy):
        try:
            assert other.generate([CAPITAL], **QUICK)[0]["generations"][0]
        finally:
            other.unload()
    assert llm.generate([CAPITAL], **QUICK)[0]["generations"][0], "the original still holds its model"


def test_dump_round_trip_with_options() -> None:
    llm = LlamaCppLLM(n_ctx=1024, n_threads=1, generation_kwargs={"temperature": 0.3, "seed": 5})
    assert load_llm(llm.dump()) == llm


def test_context_below_llama_cpp_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="n_ctx"):
        LlamaCppLLM(n_ctx=64)


def test_grammar_keeps_json_strings_valid_and_integers_in_range() -> None:
    from pydantic import BaseModel, Field
    from taskloom_llamacpp.llm import _grammar, _schema_text

    class Score(BaseModel):
        score: int = Field(ge=1, le=5)
        note: str

    schema = json.loads(_schema_text(Score.model_json_schema()))
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    rules = _grammar(_schema_text(Score.model_json_schema()))._grammar
    [char_rule] = [line for line in rules.splitlines() if line.startswith("char ::=")]
    assert r'[^"\\\x7F\x00-\x1F]' in char_rule, "raw control characters must not be allowed in strings"
    assert '"u"' not in char_rule, "no \\u escapes: small models repeat them until the answer is cut off"
    assert '"1" | "2" | "3" | "4" | "5"' in rules


TOPICS = ["the sea", "a mountain", "bread", "a clock", "rain", "a library", "a bicycle", "the moon", "snow"]


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.8, "seed": 7}], ids=["greedy", "seeded"])
def test_answers_do_not_depend_on_how_many_are_decoded_together(sampling: dict[str, Any]) -> None:
    """Continuous batching must not change an answer: one at a time, four or nine decoded together,
    or asked while other answers are half written, every greedy or seeded answer is the same."""
    chats = [[{"role": "user", "content": f"Write one sentence about {topic}."}] for topic in TOPICS]
    kwargs = {"max_new_tokens": 24, **sampling}

    def answers(parallel: int) -> list[str | None]:
        llm = LlamaCppLLM(parallel=parallel)
        try:
            return [out["generations"][0] for out in llm.generate(chats, **kwargs)]
        finally:
            llm.unload()

    alone = answers(1)
    assert len(set(alone)) == len(chats)  # nine different answers: the comparison means something
    assert answers(4) == alone
    assert answers(9) == alone

    llm = LlamaCppLLM(parallel=4)
    try:  # the same chats arriving at different moments, from threads, while others are decoded
        staggered: dict[int, str | None] = {}

        def ask(index: int) -> None:
            time.sleep(0.05 * (index % 3))
            staggered[index] = llm.generate([chats[index]], **kwargs)[0]["generations"][0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(chats))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [staggered[i] for i in range(len(chats))] == alone
    finally:
        llm.unload()


def test_greedy_answers_are_llama_cpp_pythons_own() -> None:
    """The decoder reads the prompt the chat handler builds and samples with the library's chain,
    so a greedy answer is the one ``Llama.create_chat_completion`` writes on a fresh model."""
    chats = [[{"role": "user", "content": f"Write one sentence about {topic}."}] for topic in TOPICS[:4]]
    llm = LlamaCppLLM(parallel=4)
    try:
        ours = [out["generations"][0] for out in llm.generate(chats, max_new_tokens=24, temperature=0.0)]
    finally:
        llm.unload()
    from llama_cpp import Llama

    library = Llama(**LlamaCppLLM().load_options().llama_kwargs())
    try:
        theirs = []
        for chat in chats:
            library.reset()  # a fresh evaluation for each, as on a freshly loaded model
            out: Any = library.create_chat_completion(messages=chat, max_tokens=24, temperature=0.0)  # type: ignore[arg-type]
            theirs.append(out["choices"][0]["message"]["content"])
    finally:
        library.close()
    assert ours == theirs


def test_a_pipeline_keeps_parallel_answers_in_flight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskloom_llamacpp.decoding import Decoder

    from taskloom import Pipeline, get_task

    most = 0
    step = Decoder._step

    def counting(self: Decoder, active: dict[int, Any], free: list[int]) -> None:
        nonlocal most
        most = max(most, len(active))
        step(self, active, free)

    monkeypatch.setattr(Decoder, "_step", counting)
    llm = LlamaCppLLM(parallel=3, generation_kwargs={"max_new_tokens": 12, "temperature": 0.0})
    task = get_task("text-generation", name="answer", llm=llm)
    rows = [{"instruction": f"Write one sentence about {topic}."} for topic in TOPICS[:6]]
    result = Pipeline(task, source=rows, name="batched").run(output=tmp_path, progress=None)
    assert result.stats.steps["answer"].max_concurrency == 3
    assert most == 3, "the decoder never had three answers in flight"
    assert [row["generation"] for row in result.rows()] == [
        out["generations"][0]
        for out in LlamaCppLLM(parallel=1).generate(
            [[{"role": "user", "content": row["instruction"]}] for row in rows], max_new_tokens=12, temperature=0.0
        )
    ]


def test_parallel_does_not_change_the_cache_identity() -> None:
    from taskloom.pipeline.cache import llm_identity

    assert llm_identity(LlamaCppLLM(parallel=1)) == llm_identity(LlamaCppLLM(parallel=8))


def test_runs_leave_a_model_their_caller_loaded_loaded(tmp_path: Path) -> None:
    from taskloom import Pipeline, get_task

    llm = LlamaCppLLM(generation_kwargs=QUICK)
    llm.load()
    try:
        held = llm._holding
        assert held is not None and llm.is_loaded()
        task = get_task("text-generation", llm=llm)
        for run in range(2):
            Pipeline(task, source=[{"instruction": "Name a fruit."}], name="kept").run(
                output=tmp_path / str(run), progress=None
            )
            assert llm._holding is held  # not unloaded, not loaded again
    finally:
        llm.unload()
    assert not llm.is_loaded()
    # Without the caller's load, a run loads the model and lets it go when it ends.
    other = LlamaCppLLM(generation_kwargs=QUICK)
    Pipeline(get_task("text-generation", llm=other), source=[{"instruction": "Hi."}], name="own").run(
        output=tmp_path / "own", progress=None
    )
    assert not other.is_loaded()
