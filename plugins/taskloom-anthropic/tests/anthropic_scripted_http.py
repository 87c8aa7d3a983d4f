"""A loopback HTTP server that answers from a script, for failures a real server will not produce.

Each request gets the next :class:`Reply` of the script (the last one repeats once the script
runs out); every request is recorded (path, headers, JSON body) so tests can count retries and
check what was sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"

    def payload(self) -> bytes:
        return json.dumps(self.body).encode() if isinstance(self.body, dict) else self.body


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


def message(
    text: str = "Hello there.", input_tokens: int = 11, output_tokens: int = 3, **usage: int
) -> Reply:
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


class ScriptedServer:
    """``with ScriptedServer([reply, ...]) as server:`` then point a client at ``server.url``."""

    def __init__(self, script: list[Reply]) -> None:
        if not script:
            raise ValueError("a script needs at least one reply")
        self.script = list(script)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                reply = owner._next(self.path, dict(self.headers.items()), raw)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.payload()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _next(self, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        with self._lock:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"_raw": raw.decode(errors="replace")}
            self.requests.append(Request(path, {k.lower(): v for k, v in headers.items()}, body, time.monotonic()))
            index = len(self.requests) - 1
            return self.script[min(index, len(self.script) - 1)]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
