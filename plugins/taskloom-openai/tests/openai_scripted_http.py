"""Chat-completion bodies for core's scripted loopback server, and a stand-in for the Batch API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskloom.testing.http import Reply, ScriptedServer

__all__ = ["FakeBatchAPI", "Reply", "ScriptedServer", "completion"]


def completion(texts: list[str], prompt_tokens: int = 7, completion_tokens: int = 5) -> Reply:
    """A well-formed chat completion with one choice per text."""
    return Reply(
        body={
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "scripted",
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


class FakeBatchAPI:
    """A loopback stand-in for OpenAI's Files and Batch APIs (upload, create, retrieve, content).

    Each batch reports ``in_progress`` for ``polls_before_done`` retrievals, then ``final_status``;
    its answers come from ``answer(custom_id, body) -> (status_code, body)``.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.polls_before_done = 1
        self.final_status = "completed"
        self.fail_next_retrieve: int | None = None
        self.answer: Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]] = self._echo
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes | dict[str, Any], content_type: str = "application/json") -> None:
                raw = json.dumps(body).encode() if isinstance(body, dict) else body
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                with api._lock:
                    api.calls.append(("GET", self.path))
                    status, body = api._get(self.path)
                self._send(status, body, "application/octet-stream" if isinstance(body, bytes) else "application/json")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                with api._lock:
                    api.calls.append(("POST", self.path))
                    status, body = api._post(self.path, self.headers.get("content-type", ""), raw)
                self._send(status, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @staticmethod
    def _echo(custom_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        n = body.get("n", 1)
        texts = [f"{custom_id} answer {i}" for i in range(n)]
        reply = completion(texts, prompt_tokens=10, completion_tokens=3 * n).body
        assert isinstance(reply, dict)
        return 200, reply

    def requests_of(self, batch_id: str) -> list[dict[str, Any]]:
        """The request lines uploaded for a batch."""
        data = self.files[self.batches[batch_id]["input_file_id"]]
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def add_batch(self, input_lines: list[dict[str, Any]], metadata: dict[str, str] | None = None) -> str:
        file_id = f"file-{len(self.files)}"
        self.files[file_id] = "\n".join(json.dumps(line) for line in input_lines).encode()
        return self._create({"input_file_id": file_id, "metadata": metadata})["id"]

    def _create(self, payload: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{len(self.batches)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "created_at": int(time.time()),
            "input_file_id": payload["input_file_id"],
            "metadata": payload.get("metadata"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "polls": 0,
        }
        return self.batches[batch_id]

    def _finish(self, batch: dict[str, Any]) -> None:
        batch["status"] = self.final_status
        if self.final_status == "failed":
            batch["errors"] = {"object": "list", "data": [{"code": "invalid", "message": "bad file"}]}
            return
        good, bad = [], []
        for line in self.requests_of(batch["id"]):
            status, body = self.answer(line["custom_id"], line["body"])
            record = {"id": "r", "custom_id": line["custom_id"], "response": {"status_code": status, "body": body}}
            record["error"] = None
            (good if status == 200 else bad).append(json.dumps(record))
        for kind, records in (("output_file_id", good), ("error_file_id", bad)):
            if records:
                file_id = f"file-{len(self.files)}"
                self.files[file_id] = "\n".join(records).encode()
                batch[kind] = file_id

    def _post(self, path: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        if path == "/v1/files":
            import email.parser

            head = b"content-type: " + content_type.encode() + b"\r\n\r\n"
            message = email.parser.BytesParser().parsebytes(head + raw)
            parts = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
            assert parts["purpose"].get_payload() == "batch"
            file_id = f"file-{len(self.files)}"
            self.files[file_id] = parts["file"].get_payload(decode=True)
            now = int(time.time())
            return 200, {
                "id": file_id,
                "object": "file",
                "bytes": len(raw),
                "created_at": now,
                "filename": "x",
                "purpose": "batch",
                "status": "processed",
            }
        if path == "/v1/batches":
            payload = json.loads(raw)
            assert payload["endpoint"] == "/v1/chat/completions"
            return 200, self._public(self._create(payload))
        return 404, {"error": {"message": f"no route {path}"}}

    def _get(self, path: str) -> tuple[int, bytes | dict[str, Any]]:
        if path.startswith("/v1/batches/"):
            if self.fail_next_retrieve is not None:
                status, self.fail_next_retrieve = self.fail_next_retrieve, None
                return status, {"error": {"message": "scripted failure"}}
            batch = self.batches[path.rsplit("/", 1)[1]]
            batch["polls"] += 1
            if batch["polls"] > self.polls_before_done and batch["status"] in ("validating", "in_progress"):
                self._finish(batch)
            elif batch["status"] == "validating":
                batch["status"] = "in_progress"
            return 200, self._public(batch)
        if path.startswith("/v1/files/") and path.endswith("/content"):
            return 200, self.files[path.split("/")[3]]
        return 404, {"error": {"message": f"no route {path}"}}

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if k != "polls"}
