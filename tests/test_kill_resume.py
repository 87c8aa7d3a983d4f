"""Kill a real pipeline run with SIGKILL, run it again, and count what the server was asked.

The cache's promise is "never pay twice": every generation is stored the moment it arrives, so a
run killed at any instant and started again asks only for what it never got, and ends with the
same output as a run that was never interrupted. Unit tests of the cache and executor check the
pieces; this checks the promise end to end, the way a user meets it: a separate process, a real
HTTP server, ``kill -9`` in the middle of the run, and the server's own count of requests as the
bill. The server answers every prompt with a text that is a function of the prompt alone, so a
resumed run's rows must be exactly a clean run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

ROWS = 200
CONCURRENCY = 16
KILL_AFTER = 60
"""Requests the server must have received before the first run is killed."""
LATENCY = 0.05

# The user's side: a plain script running a pipeline, started (and killed) as its own process.
SCRIPT = """
import sys
from taskloom import Pipeline, get_llm, get_task

url, output, rows, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
source = [{"instruction": f"Prompt number {i}: say something about {i}."} for i in range(rows)]
llm = get_llm("openai", model="resume-test", base_url=url, api_key="none", max_concurrency=concurrency)
result = Pipeline(get_task("text-generation", llm=llm), source=source, name="resume").run(output=output)
assert result.stats.done == rows, result.stats
"""


def command(script: Path, url: str, output: Path) -> list[str]:
    return [sys.executable, str(script), url, str(output), str(ROWS), str(CONCURRENCY)]


def answer(prompt: str) -> str:
    """The server's answer: deterministic, so a resumed run and a clean run must agree."""
    return f"An answer to {prompt!r} of {len(prompt)} characters."


class CountingServer:
    """An OpenAI-compatible chat server on a free loopback port, in a thread, counting every prompt."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="counting-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        with self._lock:
            self.counts[prompt] += 1
        await asyncio.sleep(LATENCY)
        text = answer(prompt)
        payload = {
            "id": "cmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "test"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": len(prompt.split()) + len(text.split()),
            },
        }
        return web.json_response(payload)

    async def _counts(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/counts", self._counts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def snapshot(self) -> dict[str, int]:
        """Requests received so far, per prompt (a copy)."""
        with self._lock:
            return dict(self.counts)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


@pytest.fixture
def server() -> Iterator[CountingServer]:
    running = CountingServer()
    running.start()
    try:
        yield running
    finally:
        running.stop()


def run_to_end(script: Path, url: str, output: Path) -> None:
    done = subprocess.run(command(script, url, output), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, each of which must parse: a killed run leaves whole lines only."""
    text = path.read_text(encoding="utf-8")
    assert not text or text.endswith("\n"), f"{path} ends in a torn line: {text[-200:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def stored_keys(cache: Path) -> set[str]:
    """The keys of every generation the cache holds (read by a plain SQLite client)."""
    with contextlib.closing(sqlite3.connect(cache)) as db:
        return {key for (key,) in db.execute("SELECT key FROM generations")}


def stored_count(cache: Path) -> int:
    with contextlib.closing(sqlite3.connect(cache)) as db:
        count: int = db.execute("SELECT count(*) FROM generations").fetchone()[0]
    return count


def prompts_stored(cache: Path, url: str, prompts: list[str]) -> set[str]:
    """Which prompts have a stored generation, found by the keys the executor gives them."""
    from taskloom import get_llm
    from taskloom.pipeline.cache import generation_key, llm_identity

    # Built as the script builds it: the key depends on the LLM's identity, base_url included.
    llm = get_llm("openai", model="resume-test", base_url=url, api_key="none", max_concurrency=CONCURRENCY)
    identity, kwargs = llm_identity(llm), dict(llm.generation_kwargs)
    found = stored_keys(cache)
    return {p for p in prompts if generation_key(identity, [{"role": "user", "content": p}], kwargs, 0) in found}


def test_sigkill_then_resume_asks_only_for_what_was_never_stored(server: CountingServer, tmp_path: Path) -> None:
    script = tmp_path / "run_pipeline.py"
    script.write_text(SCRIPT, encoding="utf-8")
    url = f"{server.url}/v1"
    run_dir = tmp_path / "run"

    # 1. Start the run and kill it hard once enough requests have reached the server.
    process = subprocess.Popen(command(script, url, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    try:
        while server.total() < KILL_AFTER:
            if process.poll() is not None:
                assert process.stderr is not None
                pytest.fail(f"the run ended before it could be killed: {process.stderr.read()[-3000:]!r}")
            assert time.monotonic() < deadline, "the run never sent enough requests"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()  # a no-op once killed; stops the child if an assertion fired first
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.2)  # let the server take in whatever the dead client had already sent
    first_run = server.snapshot()
    asked_first = sum(first_run.values())
    assert KILL_AFTER <= asked_first < ROWS, asked_first

    stored = stored_count(run_dir / "cache.sqlite")
    prompts = [f"Prompt number {i}: say something about {i}." for i in range(ROWS)]
    already = prompts_stored(run_dir / "cache.sqlite", url, prompts)  # the stored generations, by prompt
    assert len(already) == stored
    # What was asked and not stored was in flight at the kill: at most the concurrency.
    assert asked_first - CONCURRENCY <= stored <= asked_first, (asked_first, stored)
    output = run_dir / "text-generation.jsonl"  # the JSONL sink names the file after the leaf step
    prefix = read_rows(output)
    assert len(prefix) <= stored  # a row is written only once its generation is stored

    # 2. The same command again, to the end.
    run_to_end(script, url, run_dir)
    after_resume = server.snapshot()
    resumed = Counter(after_resume) - Counter(first_run)
    assert sum(resumed.values()) == ROWS - stored
    assert all(count == 1 for count in resumed.values())
    assert set(resumed).isdisjoint(already), "a stored generation was asked for again"
    assert set(resumed) | already == set(prompts)
    total = sum(after_resume.values())
    assert total - ROWS <= CONCURRENCY, (total, ROWS)

    # 3. A clean, uninterrupted run of the same pipeline gives the very same rows.
    clean_dir = tmp_path / "clean"
    run_to_end(script, url, clean_dir)
    assert server.total() == total + ROWS  # a fresh folder has a cache of its own: nothing to reuse
    resumed_rows, clean_rows = read_rows(output), read_rows(clean_dir / output.name)
    assert len(resumed_rows) == ROWS
    assert resumed_rows == clean_rows
    assert prefix == clean_rows[: len(prefix)], "the killed run's output is not a prefix of the full output"
    assert [row["generation"] for row in clean_rows] == [answer(p) for p in prompts]
