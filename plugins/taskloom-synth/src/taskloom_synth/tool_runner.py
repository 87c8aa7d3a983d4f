"""Run generated tool calls against the user's Python functions, in a child process.

Why a child process: a generated call may hang, crash the interpreter or try the network, and
none of that may take the run down. One child serves all the calls of one row (starting a
Python interpreter costs about 30 ms, a call usually far less, so a child per call would mostly
measure start-up); each call has its own deadline. A call that overruns it, or kills the child,
gets its error, the child is replaced, and the calls after it still run. At most one child
per row is alive at a time, for at most ``timeout`` seconds per call.

The child refuses network connections before importing the user's code (it replaces the
connecting parts of :mod:`socket`). That stops an honest mistake, not an attacker: code can
undo it, call the OS directly or write files. This is **not a security sandbox**; run only
functions you trust.

Importing this module imports nothing beyond the standard library: the child runs it as
``python -m taskloom_synth.tool_runner``, and it must start fast.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["CallResult", "run_tool_calls"]

NETWORK_REFUSED = "network access is disabled while generated tool calls run (taskloom function-calling)"


@dataclass(frozen=True)
class CallResult:
    """What one call gave: its result as text (JSON when it is JSON-able), or why it has none."""

    result: str | None = None
    error: str | None = None


def run_tool_calls(source: str, calls: Sequence[tuple[str, Any]], timeout: float = 5.0) -> list[CallResult]:
    """Run ``calls`` (tool name, arguments) against the functions in ``source``; one result per call, in order.

    The calls run in a child process; one that dies or hangs on a call is stopped and a new child
    runs the rest, so one bad call costs only its own result. Every child is gone when this
    returns. It blocks: the task hands it to its driver as a ``Call.run``, which a pipeline runs
    beside its event loop, so other rows' requests go on meanwhile.
    """
    pending = list(calls)
    results: list[CallResult] = []
    while len(results) < len(pending):
        child = _Child.spawn(source, pending[len(results) :])
        try:
            results.extend(child.read(len(pending) - len(results), timeout))
        finally:
            child.stop()
    return results


class _Child:
    """One child process and the thread that reads its answers, one JSON line per call."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: IO[bytes], count: int) -> None:
        self.process = process
        self.stderr = stderr
        self.count = count
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read_lines, daemon=True)
        self.reader.start()

    @classmethod
    def spawn(cls, source: str, calls: Sequence[tuple[str, Any]]) -> _Child:
        # A file, not a pipe: a chatty function cannot fill it and stall; _Child.stop closes it.
        stderr = tempfile.TemporaryFile()  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "taskloom_synth.tool_runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=os.getcwd(),
            start_new_session=True,
        )
        assert process.stdin is not None
        request = {"source": source, "calls": [{"name": name, "arguments": args} for name, args in calls]}
        try:
            process.stdin.write(json.dumps(request, default=str).encode())
            process.stdin.close()
        except OSError:  # it died at once; read() reports how
            pass
        return cls(process, stderr, len(calls))

    def _read_lines(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, count: int, timeout: float) -> list[CallResult]:
        """Answers until ``count`` calls are done, the child dies, or one call overruns ``timeout``."""
        results: list[CallResult] = []
        deadline = time.monotonic() + timeout  # importing the user's module counts against the first call
        while len(results) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                results.append(CallResult(error=f"TimeoutError: the call did not return within {timeout:g} s"))
                return results
            if line is None:
                results.append(CallResult(error=self._death()))
                return results
            try:
                answer = json.loads(line)
            except ValueError:
                continue  # not ours (the protocol has its own descriptor, but be lenient)
            if "fatal" in answer:  # the functions could not be loaded: no call can run
                return results + [CallResult(error=str(answer["fatal"]))] * (count - len(results))
            results.append(CallResult(result=answer.get("result"), error=answer.get("error")))
            deadline = time.monotonic() + timeout
        return results

    def _death(self) -> str:
        code = self.process.wait(timeout=5)
        self.stderr.seek(0)
        tail = self.stderr.read()[-600:].decode(errors="replace").strip()
        return f"CrashError: the function ended its process (exit code {code})" + (f": {tail}" if tail else "")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


# -- the child ---------------------------------------------------------------------------------


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise PermissionError(NETWORK_REFUSED)


def _block_network() -> None:
    """Make every connection attempt raise, before the user's code is imported (best effort)."""
    import socket

    for name in ("connect", "connect_ex", "sendto", "sendmsg", "bind"):
        setattr(socket.socket, name, _refuse)
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
    socket.gethostbyname = _refuse


def _load(source: str) -> Any:
    import importlib
    import importlib.util

    if source.endswith(".py") or os.sep in source or "/" in source:
        path = os.path.abspath(source)
        spec = importlib.util.spec_from_file_location("taskloom_user_tools", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load functions from the file {path!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(source)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _child_main() -> None:
    # Answers go out on a descriptor of their own; what the functions print goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    _block_network()
    try:
        module = _load(request["source"])
    except BaseException as error:
        out.write(json.dumps({"fatal": f"cannot load the functions from {request['source']!r}: {_describe(error)}"}))
        out.write("\n")
        out.flush()
        return
    for call in request["calls"]:
        function = getattr(module, call["name"], None)
        answer: dict[str, Any]
        if not callable(function):
            answer = {"error": f"NameError: {request['source']} has no function {call['name']!r}"}
        else:
            arguments = call["arguments"]
            try:
                value = function(**arguments) if isinstance(arguments, dict) else function(arguments)
                answer = {"result": _as_text(value)}
            except BaseException as error:  # SystemExit and KeyboardInterrupt too: the row records them
                answer = {"error": _describe(error)}
        out.write(json.dumps(answer, ensure_ascii=False) + "\n")
        out.flush()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    _child_main()
