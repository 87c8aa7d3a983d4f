"""Raw text through OpenAILLM: ``/v1/completions`` with a ``prompt``, the answer read from ``text``.

The request shape is checked against the scripted loopback server, and the whole path (raw text,
then Magpie and a conversation) against a real llama.cpp server.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from openai_scripted_http import Reply, ScriptedServer
from taskloom_openai import OpenAILLM

from taskloom import Pipeline, get_task
from taskloom.retry import RetryPolicy


def text_completion(texts: list[str]) -> Reply:
    """A well-formed legacy completion, as OpenAI documents ``/v1/completions``."""
    return Reply(
        body={
            "id": "cmpl-test",
            "object": "text_completion",
            "created": int(time.time()),
            "model": "scripted",
            "choices": [
                {"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
    )


def make_llm(base_url: str, **fields: Any) -> OpenAILLM:
    fields.setdefault("retry", RetryPolicy(max_attempts=2, initial_delay=0.01))
    return OpenAILLM(model="scripted", base_url=base_url, api_key="none", **fields)


def test_raw_text_goes_to_completions_with_a_prompt(scripted: ScriptedServer) -> None:
    scripted.answer(text_completion(["What is a prime number?"]))
    llm = make_llm(f"{scripted.url}/v1")
    llm.load()
    try:
        [output] = llm.generate(["<|im_start|>user\n"], max_new_tokens=20, stop=["<|im_end|>"], seed=4)
    finally:
        llm.unload()
    [request] = scripted.requests
    assert request.path == "/v1/completions"
    assert request.body == {
        "model": "scripted",
        "prompt": "<|im_start|>user\n",
        "max_tokens": 20,
        "stop": ["<|im_end|>"],
        "seed": 4,
    }
    assert output["generations"] == ["What is a prime number?"]
    assert output["statistics"] == {"input_tokens": [9], "output_tokens": [4]}


def test_openai_itself_still_gets_max_tokens_on_completions(scripted: ScriptedServer) -> None:
    # OpenAI's chat endpoint wants max_completion_tokens, its legacy completions endpoint max_tokens.
    scripted.answer(text_completion(["ok"]))
    llm = make_llm(f"{scripted.url}/v1", max_tokens_parameter="max_completion_tokens")
    llm.load()
    try:
        llm.generate(["Once upon a time"], max_new_tokens=5)
    finally:
        llm.unload()
    assert scripted.requests[0].body["max_tokens"] == 5


def test_the_template_is_read_from_the_servers_apply_template_or_not_at_all(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body={"prompt": "<|im_start|>user\nX<|im_end|>\n<|im_start|>assistant\n"}))
    llm = make_llm(f"{scripted.url}/v1")
    try:
        assert (
            llm.render_chat([{"role": "user", "content": "X"}])
            == "<|im_start|>user\nX<|im_end|>\n<|im_start|>assistant\n"
        )
        [request] = scripted.requests
        assert request.path == "/apply-template"  # beside /v1, where llama.cpp's server has it
        assert request.body == {"messages": [{"role": "user", "content": "X"}]}
        scripted.answer(Reply(status=404, body={"error": {"message": "File Not Found"}}))
        assert llm.render_chat([{"role": "user", "content": "X"}]) is None  # vLLM, OpenAI: no such endpoint
    finally:
        llm.unload()


def test_batch_mode_takes_no_raw_text() -> None:
    assert make_llm("http://127.0.0.1:9/v1").completes_raw_text()
    assert not make_llm("http://127.0.0.1:9/v1", batch_api=True).completes_raw_text()
    with pytest.raises(ValueError, match="raw text"):
        get_task("magpie", llm=make_llm("http://127.0.0.1:9/v1", batch_api=True))


@pytest.mark.llama_server
def test_raw_text_magpie_and_a_conversation_on_a_real_server(llama_server: Any, tmp_path: Any) -> None:
    llm = make_llm(llama_server.openai_base_url, generation_kwargs={"max_new_tokens": 24, "temperature": 0.8})
    try:
        [output] = llm.generate(["The capital of France is"], max_new_tokens=8)
    finally:
        llm.unload()  # the sync facade's session; each run below opens and closes its own
    assert output["generations"][0] and output["statistics"]["output_tokens"][0] > 0
    # The template is read from the server (llama.cpp's /apply-template), as the GGUF's own.
    magpie = get_task("magpie", llm=llm, num_rows=3)
    made = Pipeline(magpie, name="magpie").run(output=tmp_path / "magpie", progress=None)
    rows = list(made.rows())
    assert len(rows) == 3 and all(isinstance(r["instruction"], str) and r["instruction"] for r in rows)
    assert all(isinstance(r["response"], str) and r["response"] for r in rows)
    talk = get_task("conversation", llm=llm, n_turns=2)
    made = Pipeline(talk, source=[{"topic": "learning to swim as an adult"}], name="talk").run(
        output=tmp_path / "talk", progress=None
    )
    [row] = made.rows()
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert all(m["content"] for m in row["messages"])
