"""A scripted loopback HTTP server, for the failures a real server will not produce on demand.

Provider tests run their success paths against a real server; 429 with ``Retry-After``, 500,
529, timeouts and malformed bodies come from here. Each request, POST or GET, gets the next
:class:`Reply` of the script (the last one repeats), and every request is recorded (method,
path, headers, JSON body, arrival time) so a test can count retries and check what was sent.
GETs share the script with POSTs because a batch API's calls come in one known order (submit,
poll, fetch the results), so one list of replies tells that story. A provider's tests add only
the body shapes of their API (a chat completion, a message, an error).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: status, body (a dict or list is sent as JSON), headers, and a delay first."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/json"

    def payload(self) -> bytes:
        body = self.body
        if isinstance(body, dict | list):
            body = json.dumps(body)
        return body.encode() if isinstance(body, str) else body


@dataclass
class Request:
    """One request the server received; header names are lower case.

    ``method`` comes last, with a default, so that code building a ``Request`` by position from
    before GETs were answered keeps working. ``body`` is ``None`` for a request without one (a GET).
    """

    path: str
    headers: dict[str, str]
    body: Any
    at: float
    method: str = "POST"


Step = Reply | Callable[[Any], Reply]
"""A reply, or a function of the request's JSON body (``None`` for a GET) that returns one."""


class ScriptedServer:
    """A threaded loopback server answering POSTs and GETs from a script; usable as a context manager.

    It listens from construction on; ``close()`` (or leaving the ``with`` block) stops it, and
    cuts short any scripted delay still running.
    """

    def __init__(self, script: Iterable[Step] = (Reply(),)) -> None:
        self.script: list[Step] = list(script) or [Reply()]
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self._answer("POST")

            def do_GET(self) -> None:
                self._answer("GET")

            def _answer(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                reply = owner._record(self.path, dict(self.headers.items()), raw, method)
                if reply.delay and owner._closing.wait(reply.delay):
                    return
                payload = reply.payload()
                try:
                    self.send_response(reply.status)
                    for name, value in {"content-type": reply.content_type, **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (a timeout test)
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that drops a kept-alive connection is not news

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def _record(self, path: str, headers: dict[str, str], raw: bytes, method: str = "POST") -> Reply:
        body: Any
        if not raw:
            body = None if method == "GET" else {}  # an empty POST has always been recorded as {}
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode(errors="replace")}
        headers = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            self.requests.append(Request(path, headers, body, time.monotonic(), method))
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return step(body) if callable(step) else step

    @property
    def url(self) -> str:
        """The server's root URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, *steps: Step) -> None:
        """Answer the next requests with these, in order (the last repeats); forget earlier requests."""
        with self._lock:
            self.script = list(steps) or [Reply()]
            self.requests.clear()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Reply", "Request", "ScriptedServer", "Step"]
