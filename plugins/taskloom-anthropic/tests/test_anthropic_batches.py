"""AnthropicLLM's opt-in Message Batches mode against a scripted loopback server.

No real Anthropic server is reachable from the tests, and llama.cpp's server has no batch
endpoints, so the whole life of a batch is scripted here: its creation, its polls (in progress,
then ended, with transient failures on the way), and its JSONL results (succeeded, errored,
canceled, expired and missing lines, in no particular order), answering the requests the batch
was really sent. What is checked is what we send and how we read what comes back.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from anthropic_scripted_http import (
    BATCH_ID,
    BatchScript,
    Reply,
    ScriptedServer,
    batch_object,
    canceled,
    echo,
    error,
    errored,
    expired,
    message,
    results_file,
    succeeded,
    tool_use,
)
from pydantic import BaseModel
from taskloom_anthropic import AnthropicLLM
from taskloom_anthropic.llm import API_VERSION, BatchMismatchError

from taskloom import Pipeline, get_task, load_llm
from taskloom.errors import AuthenticationError, BadRequestError, GenerationError, TaskloomError
from taskloom.pipeline.cache import llm_identity
from taskloom.retry import RetryPolicy

KEY = "sk-ant-batch-0123456789-secret"
CHATS = [[{"role": "user", "content": c}] for c in ("one", "two", "three")]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # what the API accepts


def make_llm(server: ScriptedServer, **fields: Any) -> AnthropicLLM:
    fields.setdefault("retry", FAST_RETRY)
    fields.setdefault("batch_poll_interval", 0.01)
    fields.setdefault("batch_api", True)
    llm = AnthropicLLM(model="claude-test", base_url=server.url, api_key=KEY, **fields)
    llm.load()
    return llm


def generate(llm: AnthropicLLM, chats: list[Any], num_generations: int = 1, **kwargs: Any) -> list[Any]:
    try:
        return llm.generate(chats, num_generations=num_generations, **kwargs)
    finally:
        llm.unload()


def calls(server: ScriptedServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests]


def texts(script: BatchScript, num_generations: int) -> list[list[str]]:
    """What :func:`echo` answered, grouped per input in the order the requests were submitted."""
    ids, asked = script.custom_ids, [r["params"]["messages"][-1]["content"] for r in script.submitted]
    answers = [f"{content} ({cid})" for content, cid in zip(asked, ids, strict=True)]
    return [answers[i : i + num_generations] for i in range(0, len(answers), num_generations)]


# -- the life of a batch ---------------------------------------------------------------------------


def test_submit_poll_collect_in_input_order(caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(polls_in_progress=2))
        llm = make_llm(server)
        with caplog.at_level(logging.WARNING, logger="taskloom.anthropic"):
            outputs = generate(llm, CHATS, max_new_tokens=5, temperature=0.2)
    poll = ("GET", f"/v1/messages/batches/{BATCH_ID}")
    assert calls(server) == [("POST", "/v1/messages/batches"), poll, poll, poll, ("GET", script.results_path)]
    # Results came back last first; the outputs are in input order all the same.
    assert [o["generations"] for o in outputs] == texts(script, 1)
    assert outputs[0]["generations"] == [f"one ({script.custom_ids[0]})"]
    assert all(o["statistics"] == {"input_tokens": [11], "output_tokens": [3]} for o in outputs)
    assert all("error" not in o and "errors" not in o for o in outputs)
    # Each request's params are exactly the body a live request would send.
    assert [r["params"] for r in script.submitted] == [
        {"model": "claude-test", "messages": chat, "max_tokens": 5, "temperature": 0.2} for chat in CHATS
    ]
    for index, cid in enumerate(script.custom_ids):
        assert CUSTOM_ID.match(cid)
        assert cid.startswith(f"i{index}-g0-")
    for request in server.requests:
        assert request.headers["x-api-key"] == KEY
        assert request.headers["anthropic-version"] == API_VERSION
    assert server.requests[1].body is None  # a poll is a plain GET
    [warning] = [r.getMessage() for r in caplog.records if "Submitted" in r.getMessage()]
    assert BATCH_ID in warning
    assert f"batch_id={BATCH_ID!r}" in warning
    assert llm.batch_id is None


def test_num_generations_are_requests_of_their_own_and_an_errored_one_fails_alone() -> None:
    def answer(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        if custom_id.startswith("i0-g1-"):
            return errored(custom_id, "invalid_request_error", "prompt is too long")
        return echo(custom_id, params)

    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=answer))
        outputs = generate(make_llm(server), CHATS[:2], num_generations=2)
    ids = script.custom_ids
    assert [cid.split("-")[:2] for cid in ids] == [["i0", "g0"], ["i0", "g1"], ["i1", "g0"], ["i1", "g1"]]
    assert len(set(ids)) == 4
    assert script.submitted[0]["params"] == script.submitted[1]["params"]  # no n: the same request twice
    assert all("n" not in r["params"] for r in script.submitted)

    first, second = outputs
    assert first["generations"] == [f"one ({ids[0]})", None]
    assert first["errors"][0] is None
    assert first["errors"][1].startswith("BadRequestError: ")
    assert "invalid_request_error: prompt is too long" in first["errors"][1]
    assert "error" not in first
    assert first["statistics"] == {"input_tokens": [11, 0], "output_tokens": [3, 0]}
    assert second["generations"] == texts(script, 2)[1]
    assert "errors" not in second


def test_canceled_expired_and_missing_lines_fail_their_own_generations() -> None:
    def answer(custom_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        content = params["messages"][0]["content"]
        if content == "canceled":
            return canceled(custom_id)
        if content == "expired":
            return expired(custom_id)
        if content == "missing":
            return None
        if content == "mixed" and custom_id.startswith("i4-g1-"):
            return expired(custom_id)
        return echo(custom_id, params)

    chats = [[{"role": "user", "content": c}] for c in ("fine", "canceled", "expired", "missing", "mixed")]
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=answer))
        outputs = generate(make_llm(server), chats, num_generations=2)
    fine, cancel, expire, missing, mixed = outputs
    assert fine["generations"] == texts(script, 2)[0]
    for output, words in ((cancel, "was canceled"), (expire, "expired"), (missing, "has no result")):
        assert output["generations"] == [None, None]
        assert words in output["error"]  # every generation failed: one error for the input
        assert BATCH_ID in output["error"]
        assert output["statistics"] == {"input_tokens": [0, 0], "output_tokens": [0, 0]}
    assert expire["error"].startswith("RequestTimeoutError: ")
    assert missing["error"].startswith("ServerError: ")
    assert mixed["generations"][0] == texts(script, 2)[4][0]
    assert mixed["generations"][1] is None
    assert mixed["errors"][0] is None
    assert "expired" in mixed["errors"][1]


@pytest.mark.parametrize(
    ("kind", "recorded_as"),
    [
        ("invalid_request_error", "BadRequestError"),
        ("not_found_error", "BadRequestError"),
        ("overloaded_error", "OverloadedError"),
        ("api_error", "ServerError"),
        ("rate_limit_error", "RateLimitError"),
    ],
)
def test_an_errored_line_is_recorded_as_the_error_its_type_names(kind: str, recorded_as: str) -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=lambda cid, params: errored(cid, kind, "scripted")))
        [output] = generate(make_llm(server), CHATS[:1])
    assert output["error"] == f"{recorded_as}: Anthropic Message Batch {BATCH_ID}: {kind}: scripted"


def test_a_malformed_succeeded_line_fails_its_generation_only() -> None:
    def answer(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        if custom_id.startswith("i1-"):
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": {"content": "not blocks"}}}
        return echo(custom_id, params)

    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=answer))
        outputs = generate(make_llm(server), CHATS[:2])
    assert outputs[0]["generations"] == texts(script, 1)[0]
    assert outputs[1]["generations"] == [None]
    assert "does not recognise" in outputs[1]["error"]


# -- resuming --------------------------------------------------------------------------------------


def test_a_stopped_run_resumes_from_its_dump_without_submitting_again() -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        # The run dies while it waits (a revoked key), after the batch was submitted.
        server.answer(script.created(), script.polled(), error(401, "authentication_error", "invalid x-api-key"))
        first = make_llm(server)
        with pytest.raises(AuthenticationError):
            generate(first, CHATS)
        assert first.batch_id == BATCH_ID
        dump = first.dump()
        assert dump["batch_id"] == BATCH_ID
        assert KEY not in json.dumps(dump)

        server.answer(script.ended(), script.results())
        resumed = load_llm(dump)
        assert isinstance(resumed, AnthropicLLM)
        resumed.api_key = KEY  # type: ignore[assignment]
        resumed.load()
        outputs = generate(resumed, CHATS)
    assert [o["generations"] for o in outputs] == texts(script, 1)
    assert calls(server) == [("GET", f"/v1/messages/batches/{BATCH_ID}"), ("GET", script.results_path)]
    assert resumed.batch_id is None


def test_batch_id_is_a_runtime_parameter_that_resumes() -> None:
    with ScriptedServer() as server:
        script = BatchScript(server, batch_id="msgbatch_other")
        server.answer(script.created(), script.ended(), script.results())
        generate(make_llm(server), CHATS)  # the first call submits the batch and collects it

        server.answer(script.ended(), script.results())
        llm = make_llm(server)
        llm.set_runtime_parameters({"batch_id": "msgbatch_other"})
        assert llm.batch_id == "msgbatch_other"
        outputs = generate(llm, CHATS)
    assert [o["generations"] for o in outputs] == texts(script, 1)
    assert all(method == "GET" for method, _ in calls(server))


def test_resume_refuses_a_batch_of_another_size_at_the_first_poll() -> None:
    with ScriptedServer() as server:
        # Past the first poll the batch would end, empty: a missed check fails here, it does not hang.
        server.answer(batch_object("in_progress", 5), batch_object("ended", 5), results_file([]))
        llm = make_llm(server, batch_id=BATCH_ID)
        with pytest.raises(BatchMismatchError, match="holds 5 requests, and this call makes 3"):
            generate(llm, CHATS)
    assert calls(server) == [("GET", f"/v1/messages/batches/{BATCH_ID}")]  # refused before any waiting
    assert llm.batch_id == BATCH_ID  # kept: the error says to unset it


@pytest.mark.parametrize(
    ("chats", "kwargs"),
    [
        ([[{"role": "user", "content": c}] for c in ("uno", "dos", "tres")], {}),  # other inputs, as many
        (CHATS, {"temperature": 0.9}),  # the same inputs, other options
        (CHATS[::-1], {}),  # the same inputs, in another order
    ],
)
def test_resume_refuses_a_batch_submitted_for_other_requests(chats: list[Any], kwargs: dict[str, Any]) -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script())
        generate(make_llm(server), CHATS)

        server.answer(script.ended(), script.results())
        llm = make_llm(server, batch_id=BATCH_ID)
        with pytest.raises(BatchMismatchError, match="other requests") as refused:
            generate(llm, chats, **kwargs)
    assert isinstance(refused.value, ValueError)
    assert isinstance(refused.value, TaskloomError)
    assert llm.batch_id == BATCH_ID


# -- failures on the way ---------------------------------------------------------------------------


def test_transient_failures_are_retried_but_the_batch_is_submitted_once() -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(
            error(529, "overloaded_error", "Overloaded"),  # the submission: answered, so nothing was created
            script.created(),
            error(529, "overloaded_error", "Overloaded"),
            error(500, "api_error", "Internal server error"),
            script.ended(),
            error(503, "overloaded_error", "try later"),  # the results file
            script.results(),
        )
        outputs = generate(make_llm(server), CHATS)
    assert [o["generations"] for o in outputs] == texts(script, 1)
    methods = [method for method, _ in calls(server)]
    assert methods == ["POST", "POST", "GET", "GET", "GET", "GET", "GET"]
    assert len(script.submitted) == 3


def test_a_submission_without_an_answer_is_not_retried() -> None:
    with ScriptedServer([Reply(delay=5)]) as server:
        llm = make_llm(server, timeout=0.2)
        with pytest.raises(GenerationError, match="may have been created anyway") as failed:
            generate(llm, CHATS)
    assert not isinstance(failed.value, BadRequestError)
    assert calls(server) == [("POST", "/v1/messages/batches")]  # retrying could have paid twice
    assert llm.batch_id is None


def test_a_results_url_on_another_host_is_not_sent_the_key() -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        elsewhere = f"https://files.example.com/v1/messages/batches/{BATCH_ID}/results"
        server.answer(script.created(), script.ended(results_url=elsewhere), script.results())
        outputs = generate(make_llm(server), CHATS[:1])
    assert outputs[0]["generations"] == texts(script, 1)[0]
    assert calls(server)[-1] == ("GET", script.results_path)


def test_an_unknown_batch_id_says_which_field_to_change() -> None:
    with ScriptedServer([error(404, "not_found_error", "batch not found")]) as server:
        llm = make_llm(server, batch_id="msgbatch_gone")
        with pytest.raises(BadRequestError, match="batch_id='msgbatch_gone'; unset it"):
            generate(llm, CHATS)


def test_too_many_requests_for_one_batch_are_refused_before_sending() -> None:
    with ScriptedServer() as server, pytest.raises(BadRequestError, match="at most 100000 requests"):
        generate(make_llm(server), CHATS[:1], num_generations=100_001)
    assert server.requests == []


def test_the_key_never_appears_in_an_error_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with ScriptedServer() as server:
        script = BatchScript(server)
        leaky = f"key {KEY} may not use batches"
        server.answer(*script.script(answer=lambda cid, params: errored(cid, "permission_error", leaky)))
        llm = make_llm(server)
        [output] = generate(llm, CHATS[:1])

        server.answer(error(400, "invalid_request_error", f"bad request from {KEY}"))
        with pytest.raises(BadRequestError) as refused:
            generate(make_llm(server), CHATS[:1])
    assert "may not use batches" in output["error"]
    assert "***" in output["error"]
    assert "***" in str(refused.value)
    for text in (output["error"], str(refused.value), caplog.text, repr(llm), json.dumps(llm.dump())):
        assert KEY not in text


# -- the rest of the contract ------------------------------------------------------------------------


def test_batch_id_is_set_while_the_batch_runs_and_cleared_once_collected() -> None:
    seen: list[str | None] = []
    with ScriptedServer() as server:
        script = BatchScript(server)
        llm = make_llm(server)

        def poll(body: Any) -> Reply:
            seen.append(llm.batch_id)
            return batch_object("ended", 3, results_url=server.url + script.results_path)

        server.answer(script.created(), poll, script.results())
        llm.generate(CHATS)
        assert seen == [BATCH_ID]
        assert llm.batch_id is None

        server.answer(script.created(), poll, script.results())
        generate(llm, CHATS)  # cleared, so the next call submits a batch of its own
    assert calls(server)[0] == ("POST", "/v1/messages/batches")


class Answer(BaseModel):
    city: str
    population: int


def test_structured_output_goes_through_a_forced_tool_in_batch_mode() -> None:
    def answer(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return succeeded(custom_id, tool_use("Answer", {"city": "Madrid", "population": 3300000}))

    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=answer))
        [output] = generate(make_llm(server), CHATS[:1], structured_output=Answer)
    assert Answer.model_validate_json(output["generations"][0]) == Answer(city="Madrid", population=3300000)
    assert output["statistics"] == {"input_tokens": [40], "output_tokens": [12]}
    params = script.submitted[0]["params"]
    [tool] = params["tools"]
    assert tool["name"] == "Answer"
    assert tool["input_schema"] == Answer.model_json_schema()
    assert params["tool_choice"] == {"type": "tool", "name": "Answer"}


def test_task_process_in_batch_mode_records_failures_on_rows() -> None:
    def answer(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        if params["messages"][0]["content"] == "b":
            return errored(custom_id, "invalid_request_error", "no thanks")
        return succeeded(custom_id, message("A."))

    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(answer=answer))
        task = get_task("text-generation", llm=make_llm(server))
        task.load()
        try:
            rows = next(task.process([{"instruction": "a"}, {"instruction": "b"}]))
        finally:
            task.unload()
    assert [r["generation"] for r in rows] == ["A.", None]
    assert "no thanks" in rows[1]["distilabel_metadata"]["error_text-generation"]
    assert [method for method, _ in calls(server)].count("POST") == 1  # both rows in one batch


def test_a_pipeline_step_in_batch_mode_sends_one_batch_for_its_rows(tmp_path: Path) -> None:
    rows = [{"instruction": f"Question {i}?"} for i in range(6)]
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script())
        task = get_task("text-generation", name="answer", llm=make_llm(server))
        result = Pipeline(task, source=rows, name="batched").run(output=tmp_path / "out", progress=None)
        out = list(result.rows())
    assert [method for method, _ in calls(server)].count("POST") == 1  # not a live request per row
    assert len(script.submitted) == len(rows)
    assert [r["instruction"] for r in out] == [r["instruction"] for r in rows]
    assert all(r["generation"].startswith(f"{r['instruction']} (i") for r in out)  # each row its own answer


def test_batch_poll_interval_is_waited_between_polls() -> None:
    with ScriptedServer() as server:
        script = BatchScript(server)
        server.answer(*script.script(polls_in_progress=3))
        generate(make_llm(server, batch_poll_interval=0.05), CHATS[:1])
    polls = [r.at for r in server.requests if r.method == "GET" and r.path.endswith(BATCH_ID)]
    assert len(polls) == 4
    assert all(later - earlier >= 0.045 for earlier, later in itertools.pairwise(polls))


def test_in_batch_mode_and_the_cache_identity() -> None:
    live = AnthropicLLM(model="claude-test", api_key=KEY)
    batched = AnthropicLLM(model="claude-test", api_key=KEY, batch_api=True)
    assert not live.in_batch_mode()
    assert batched.in_batch_mode()
    # Priced apart, so cached apart; where a batch is and how often it is polled change no text.
    assert llm_identity(live) != llm_identity(batched)
    resumed = batched.model_copy(update={"batch_id": "msgbatch_x", "batch_poll_interval": 1.0})
    assert llm_identity(resumed) == llm_identity(batched)


def test_without_batch_api_requests_stay_live() -> None:
    with ScriptedServer([message("live")]) as server:
        llm = make_llm(server, batch_api=False)
        outputs = generate(llm, CHATS[:2])
    assert [o["generations"] for o in outputs] == [["live"], ["live"]]
    assert calls(server) == [("POST", "/v1/messages"), ("POST", "/v1/messages")]
