"""The opt-in Batch API mode against a loopback fake of OpenAI's Files and Batch endpoints."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from openai_scripted_http import FakeBatchAPI
from taskloom_openai import OpenAILLM

from taskloom import get_task, load_llm
from taskloom.errors import AuthenticationError
from taskloom.retry import RetryPolicy

CHATS = [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}], [{"role": "user", "content": "3"}]]
KEY = "sk-batch-secret"


def make_llm(api: FakeBatchAPI, **fields: Any) -> OpenAILLM:
    fields.setdefault("retry", RetryPolicy(max_attempts=2, initial_delay=0.01))
    return OpenAILLM(
        model="gpt-x", base_url=api.base_url, api_key=KEY, batch_api=True, batch_poll_interval=0.01, **fields
    )


def test_submit_poll_collect(fake: FakeBatchAPI) -> None:
    fake.polls_before_done = 3
    llm = make_llm(fake)
    llm.load()
    try:
        outputs = llm.generate(CHATS, num_generations=2, max_new_tokens=5, temperature=0.2)
    finally:
        llm.unload()
    assert [o["generations"] for o in outputs] == [[f"request-{i} answer 0", f"request-{i} answer 1"] for i in range(3)]
    # One result's usage, split over its choices (as for live requests): the sums are the server's.
    assert outputs[0]["statistics"] == {"input_tokens": [5, 5], "output_tokens": [3, 3]}
    [batch_id] = fake.batches
    assert fake.batches[batch_id]["polls"] == 4  # in progress three times, then completed
    lines = fake.requests_of(batch_id)
    assert [line["custom_id"] for line in lines] == ["request-0", "request-1", "request-2"]
    assert lines[1]["body"] == {"model": "gpt-x", "messages": CHATS[1], "max_tokens": 5, "temperature": 0.2, "n": 2}
    assert llm.batch_id is None  # collected: the next call submits a new job
    assert sum(1 for method, path in fake.calls if path == "/v1/files") == 1


def test_failed_requests_are_recorded_per_row(fake: FakeBatchAPI) -> None:
    def answer(custom_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if custom_id == "request-1":
            return 400, {"error": {"message": "context too long"}}
        return FakeBatchAPI._echo(custom_id, body)

    fake.answer = answer
    llm = make_llm(fake)
    llm.load()
    outputs = llm.generate(CHATS)
    llm.unload()
    assert outputs[0]["generations"] == ["request-0 answer 0"]
    assert outputs[1]["generations"] == [None]
    assert "context too long" in outputs[1]["error"]
    assert outputs[2]["generations"] == ["request-2 answer 0"]


def test_a_result_with_fewer_answers_fails_only_the_missing_ones(fake: FakeBatchAPI) -> None:
    fake.answer = lambda cid, body: FakeBatchAPI._echo(cid, {**body, "n": 1})
    llm = make_llm(fake)
    llm.load()
    [output] = llm.generate(CHATS[:1], num_generations=2)
    llm.unload()
    assert output["generations"] == ["request-0 answer 0", None]
    assert output["errors"][0] is None
    assert "1 of 2 answers" in output["errors"][1]


def test_the_key_never_appears_in_a_batch_error(fake: FakeBatchAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer = lambda cid, body: (401, {"error": {"message": f"key {KEY} is not allowed in batches"}})
    llm = make_llm(fake)
    llm.load()
    [output] = llm.generate(CHATS[:1])
    llm.unload()
    assert output["generations"] == [None]
    assert "not allowed" in output["error"]
    for text in (output["error"], caplog.text, repr(llm), json.dumps(llm.dump())):
        assert KEY not in text


def test_expired_batch_keeps_what_finished(fake: FakeBatchAPI) -> None:
    fake.final_status = "expired"
    fake.answer = lambda cid, body: (200, FakeBatchAPI._echo(cid, body)[1]) if cid != "request-2" else (500, {})
    llm = make_llm(fake)
    llm.load()
    outputs = llm.generate(CHATS)
    llm.unload()
    assert outputs[0]["generations"] == ["request-0 answer 0"]
    assert outputs[2]["generations"] == [None]


def test_failed_batch_fails_every_row_of_the_task(fake: FakeBatchAPI) -> None:
    fake.final_status = "failed"
    task = get_task("text-generation", llm=make_llm(fake))
    task.load()
    rows = next(task.process([{"instruction": "a"}, {"instruction": "b"}]))
    task.unload()
    assert [r["generation"] for r in rows] == [None, None]
    assert "bad file" in rows[0]["distilabel_metadata"]["error_text-generation"]


def test_a_stopped_run_resumes_from_its_dump(fake: FakeBatchAPI) -> None:
    fake.polls_before_done = 2
    fake.fail_next_retrieve = 401  # the run dies while waiting, after the job was submitted
    first = make_llm(fake)
    first.load()
    with pytest.raises(AuthenticationError):
        first.generate(CHATS)
    first.unload()
    assert first.batch_id == "batch_0"
    dump = first.dump()
    assert KEY not in json.dumps(dump)

    resumed = load_llm(dump)
    resumed.api_key = KEY  # type: ignore[assignment]
    resumed.load()
    outputs = resumed.generate(CHATS)
    resumed.unload()
    assert [o["generations"] for o in outputs] == [[f"request-{i} answer 0"] for i in range(3)]
    assert len(fake.batches) == 1  # nothing submitted twice
    assert sum(1 for method, path in fake.calls if path == "/v1/files") == 1


def test_resume_refuses_a_batch_for_other_requests(fake: FakeBatchAPI) -> None:
    batch_id = fake.add_batch([], metadata={"taskloom_requests_sha256": "something else"})
    llm = make_llm(fake, batch_id=batch_id)
    llm.load()
    with pytest.raises(ValueError, match="other requests"):
        llm.generate(CHATS)
    llm.unload()


def test_transient_poll_errors_are_retried(fake: FakeBatchAPI) -> None:
    fake.fail_next_retrieve = 503
    llm = make_llm(fake)
    llm.load()
    outputs = llm.generate(CHATS[:1])
    llm.unload()
    assert outputs[0]["generations"] == ["request-0 answer 0"]


def test_batch_id_is_a_runtime_parameter() -> None:
    llm = OpenAILLM(model="m", api_key=KEY, batch_api=True)
    llm.set_runtime_parameters({"batch_id": "batch_abc"})
    assert llm.batch_id == "batch_abc"
