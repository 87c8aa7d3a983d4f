"""Messages API and Message Batches bodies for core's scripted loopback server (``taskloom.testing.http``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from taskloom.testing.http import Reply, ScriptedServer, Step

__all__ = [
    "BATCH_ID",
    "BatchScript",
    "Reply",
    "ScriptedServer",
    "batch_object",
    "canceled",
    "echo",
    "error",
    "errored",
    "expired",
    "message",
    "results_file",
    "succeeded",
    "tool_use",
]


def message(text: str = "Hello there.", input_tokens: int = 11, output_tokens: int = 3, **usage: int) -> Reply:
    """A 200 Messages API answer with one text block."""
    return Reply(
        body={
            "id": "msg_scripted",
            "type": "message",
            "role": "assistant",
            "model": "scripted-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage},
        }
    )


def tool_use(name: str, arguments: Any, input_tokens: int = 40, output_tokens: int = 12) -> Reply:
    """A 200 Messages API answer whose content is a (forced) tool call."""
    return Reply(
        body={
            "id": "msg_scripted_tool",
            "type": "message",
            "role": "assistant",
            "model": "scripted-model",
            "content": [{"type": "tool_use", "id": "toolu_scripted", "name": name, "input": arguments}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def error(status: int, kind: str, text: str = "scripted failure", **headers: str) -> Reply:
    """An error answer in the Messages API's error shape."""
    return Reply(
        status=status,
        body={"type": "error", "error": {"type": kind, "message": text}},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


# -- Message Batches -------------------------------------------------------------------------------

BATCH_ID = "msgbatch_scripted01"
BATCHES = "/v1/messages/batches"


def batch_object(
    status: str = "in_progress",
    requests: int = 1,
    *,
    batch_id: str = BATCH_ID,
    results_url: str | None = None,
    counts: dict[str, int] | None = None,
) -> Reply:
    """A Message Batch object; its ``requests`` count as processing until it has ended, then as succeeded."""
    tally = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    tally["succeeded" if status == "ended" else "processing"] = requests
    return Reply(
        body={
            "id": batch_id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {**tally, **(counts or {})},
            "created_at": "2025-01-01T00:00:00Z",
            "expires_at": "2025-01-02T00:00:00Z",
            "ended_at": "2025-01-01T01:00:00Z" if status == "ended" else None,
            "cancel_initiated_at": None,
            "archived_at": None,
            "results_url": results_url if status == "ended" else None,
        }
    )


def succeeded(custom_id: str, answer: Reply | None = None) -> dict[str, Any]:
    """A results line for a request that got ``answer`` (a :func:`message` or :func:`tool_use`)."""
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": (answer or message()).body}}


def errored(custom_id: str, kind: str = "invalid_request_error", text: str = "scripted failure") -> dict[str, Any]:
    """A results line for a request the batch answered with an error."""
    error = {"type": "error", "error": {"type": kind, "message": text}}
    return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}


def canceled(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "canceled"}}


def expired(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "result": {"type": "expired"}}


def results_file(lines: list[dict[str, Any]]) -> Reply:
    """A batch's results: one JSON object per line, served as the API serves its JSONL."""
    return Reply(body="".join(json.dumps(line) + "\n" for line in lines), content_type="application/binary")


Answer = Callable[[str, dict[str, Any]], dict[str, Any] | None]
"""What a scripted batch answers one request with: (custom_id, params) -> a results line, or None for none."""


def echo(custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """A succeeded line whose text names the request: its last message and its custom id."""
    return succeeded(custom_id, message(f"{params['messages'][-1]['content']} ({custom_id})"))


class BatchScript:
    """The steps of one Message Batch's life on a :class:`ScriptedServer`: created, polled, read.

    It remembers the requests the batch was created with, so the results step can answer them
    (and a resumed run, which submits nothing, still gets their results).
    """

    def __init__(self, server: ScriptedServer, batch_id: str = BATCH_ID) -> None:
        self.server = server
        self.batch_id = batch_id
        self.submitted: list[dict[str, Any]] = []

    @property
    def results_path(self) -> str:
        return f"{BATCHES}/{self.batch_id}/results"

    @property
    def custom_ids(self) -> list[str]:
        return [r["custom_id"] for r in self.submitted]

    def created(self) -> Step:
        def step(body: Any) -> Reply:
            self.submitted = list(body["requests"])
            return batch_object("in_progress", len(self.submitted), batch_id=self.batch_id)

        return step

    def polled(self, status: str = "in_progress", results_url: str | None = None) -> Step:
        url = results_url or self.server.url + self.results_path
        return lambda body: batch_object(status, len(self.submitted), batch_id=self.batch_id, results_url=url)

    def ended(self, results_url: str | None = None) -> Step:
        return self.polled("ended", results_url)

    def results(self, answer: Answer = echo, *, shuffled: bool = True) -> Step:
        """The results file, one line per submitted request (``answer`` may drop one), last first by default."""

        def step(body: Any) -> Reply:
            lines = [answer(r["custom_id"], r["params"]) for r in self.submitted]
            kept = [line for line in lines if line is not None]
            return results_file(kept[::-1] if shuffled else kept)

        return step

    def script(self, polls_in_progress: int = 1, answer: Answer = echo) -> list[Step]:
        """Created, ``polls_in_progress`` polls in progress, one that has ended, then the results."""
        return [self.created(), *[self.polled()] * polls_in_progress, self.ended(), self.results(answer)]
