"""The scripted loopback server that provider plugins test their failure paths against."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from taskloom.testing.http import Reply, ScriptedServer


def post(url: str, body: dict[str, Any], timeout: float = 5) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Authorization": "Bearer k"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def test_replies_follow_the_script_and_the_last_repeats() -> None:
    with ScriptedServer([Reply(429, {"e": 1}, {"Retry-After": "2"}), lambda body: Reply(body=body), Reply(500)]) as s:
        status, raw, headers = post(s.url + "/v1/x", {"n": 1})
        assert (status, json.loads(raw), headers["Retry-After"]) == (429, {"e": 1}, "2")
        assert post(s.url, {"echo": True})[:2] == (200, b'{"echo": true}')
        assert [post(s.url, {})[0] for _ in range(2)] == [500, 500]
    assert [r.path for r in s.requests] == ["/v1/x", "/", "/", "/"]
    assert s.requests[0].body == {"n": 1} and s.requests[0].headers["authorization"] == "Bearer k"
    assert s.requests[0].at <= s.requests[1].at


def test_answer_replaces_the_script_and_forgets_earlier_requests() -> None:
    with ScriptedServer() as s:
        post(s.url, {})
        s.answer(Reply(body="plain", content_type="text/plain"))
        status, raw, headers = post(s.url, {})
    assert (status, raw, headers["content-type"]) == (200, b"plain", "text/plain")
    assert len(s.requests) == 1


def test_close_cuts_a_scripted_delay_short() -> None:
    s = ScriptedServer([Reply(delay=30)])
    with pytest.raises(OSError):
        post(s.url, {}, timeout=0.3)  # the client gives up; the handler is still waiting
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 5
