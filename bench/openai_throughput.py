"""Throughput of ``get_llm("openai").generate`` against plain asyncio over the same client.

Both sides talk to ``latency_server.py`` (every answer after a fixed 200 ms, in its own
process) with 256 requests in flight. taskloom's OpenAI provider posts chat completions with
core's HTTP base (one aiohttp session per event loop), so the baseline is the least code that
can do the same over plain aiohttp: ``asyncio.gather`` under a semaphore of 256. The ratio of
rows per second (target: at least 0.9x) and the client CPU per request of each are measured in
the same run, alternating, best of ``--repeat``.

    .venv/bin/python bench/openai_throughput.py [--requests 1000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.9
HERE = Path(__file__).resolve().parent


def compile_sources() -> None:
    """Byte-compile the repo's packages, as ``pip install`` does for a wheel.

    Editable installs are not compiled, and with ``PYTHONDONTWRITEBYTECODE`` set a module edited
    since the last compile is compiled again by every process that imports it: 15-20 ms of
    start-up that no installed user pays. ``make bench`` does this too; here it also holds when a
    start-up benchmark is run by hand.
    """
    import compileall

    root = HERE.parent
    for folder in [root / "core" / "src", *sorted(root.glob("plugins/*/src"))]:
        compileall.compile_dir(folder, quiet=1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(delay: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, str(HERE / "latency_server.py"), "--port", str(port), "--delay", str(delay)]
    return launch(command, f"http://127.0.0.1:{port}", "latency server")


def launch(command: list[str], url: str, what: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server process and wait until its ``/health`` answers."""
    process = subprocess.Popen(command)
    for _ in range(200):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{what} did not start")


def chats(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}] for i in range(count)]


def run_baseline(base_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """Plain asyncio: gather under a semaphore over the client taskloom uses (aiohttp)."""
    import json

    import aiohttp

    async def main() -> None:
        url = f"{base_url}/v1/chat/completions"
        headers = {"Authorization": "Bearer bench"}
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(chat: list[dict[str, str]]) -> Any:
                async with (
                    semaphore,
                    session.post(url, json={"model": "latency", "messages": chat, "max_tokens": 16}) as response,
                ):
                    body = json.loads(await response.read())
                    return body["choices"][0]["message"]["content"]

            texts = await asyncio.gather(*(one(chat) for chat in chats(requests)))
        assert all(texts)

    start, cpu = time.perf_counter(), time.process_time()
    asyncio.run(main())
    return time.perf_counter() - start, time.process_time() - cpu


def run_taskloom(base_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    from taskloom import get_llm

    llm = get_llm(
        "openai",
        model="latency",
        base_url=f"{base_url}/v1",
        api_key="bench",
        max_concurrency=concurrency,
    )
    llm.load()
    start, cpu = time.perf_counter(), time.process_time()
    outputs = llm.generate(chats(requests), max_new_tokens=16)
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    llm.unload()
    assert all(o["generations"][0] for o in outputs)
    return elapsed, used


def measure(requests: int = 1000, concurrency: int = 256, delay: float = 0.2, repeat: int = 3) -> dict[str, Any]:
    process, url = start_server(delay)
    try:
        runners = {"baseline": run_baseline, "taskloom": run_taskloom}
        for runner in runners.values():  # warm every path: imports, connection pools
            runner(url, 50, concurrency)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeat):
            for name, runner in runners.items():
                elapsed, cpu = runner(url, requests, concurrency)
                if name not in best or elapsed < best[name][0]:
                    best[name] = (elapsed, cpu)
    finally:
        process.terminate()
        process.wait(10)
    rate = {name: requests / elapsed for name, (elapsed, _) in best.items()}
    return {
        "requests": requests,
        "concurrency": concurrency,
        "delay": delay,
        "rows_per_s": rate,
        "cpu_ms_per_request": {name: cpu / requests * 1e3 for name, (_, cpu) in best.items()},
        "ratio": rate["taskloom"] / rate["baseline"],
        "target_ratio": TARGET_RATIO,
        "met": rate["taskloom"] / rate["baseline"] >= TARGET_RATIO,
        "ceiling": concurrency / delay,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"openai provider, {result['requests']} requests, {result['concurrency']} in flight, "
        f"server latency {result['delay'] * 1e3:.0f} ms (ceiling {result['ceiling']:.0f} rows/s), best of runs:"
    )
    for name in ("baseline", "taskloom"):
        print(
            f"  {name:<12} {result['rows_per_s'][name]:8.1f} rows/s   "
            f"client CPU {result['cpu_ms_per_request'][name]:.3f} ms/request"
        )
    status = "met" if result["met"] else "MISSED"
    print(f"  ratio taskloom / plain asyncio (aiohttp): {result['ratio']:.2f}x (target >= {TARGET_RATIO}x): {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.requests, args.concurrency, args.delay, args.repeat))


if __name__ == "__main__":
    main()
