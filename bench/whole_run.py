"""Whole runs as a user feels them: a fresh process, from its start to its last row written.

The other HTTP benchmarks time the generation inside a warm process. A user running a pipeline
waits for the interpreter, the imports, the first request, every answer, the rows written and the
process gone, and an API serves only as many requests at once as the client really has out. So
this times a fresh interpreter per run, from just before ``Popen`` to its exit, for a
``Pipeline.run`` of 1,000 rows of ``text-generation`` through ``taskloom-openai`` and for a plain
aiohttp script doing the same work (a semaphore of the same size, the same request bodies, the
rows written to a JSONL file), against ``latency_server.py`` answering after 200 ms in its own
process. Alternating runs, medians of ``--repeat``, at 64, 256 and 1,000 in flight.

Per run it records, from the server's side, the most requests it had in flight at once and when
the first request arrived and the last answer left (one monotonic clock for all processes on
Linux); from the child's side its CPU time and peak memory (``VmHWM``). Targets: the pipeline's
whole run at least 0.95x the plain script's speed at each concurrency, and process start to
first request at most 1.3x the plain script's.

    .venv/bin/python bench/whole_run.py [--rows 1000] [--repeat 3] [--concurrency 64 256 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from openai_throughput import compile_sources, start_server

TARGET_RATIO = 0.95
TARGET_START_RATIO = 1.3
CONCURRENCIES = (64, 256, 1000)
MAX_NEW_TOKENS = 128

_REPORT = """
def _report(rows_written):
    import json, resource, time
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = None
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        peak = usage.ru_maxrss / 1024
    print(json.dumps({"end": time.monotonic(), "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": peak,
                      "rows": rows_written}))
"""

PLAIN = (
    _REPORT
    + """
import asyncio, json, sys
import aiohttp

url, count, concurrency, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


async def main():
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer bench"}, connector=connector) as session:

        async def one(i):
            instruction = f"Write a haiku about number {i}."
            body = {"model": "latency", "messages": [{"role": "user", "content": instruction}],
                    "max_tokens": MAX_NEW_TOKENS}
            async with semaphore, session.post(url + "/v1/chat/completions", json=body) as response:
                data = json.loads(await response.read())
                return {"instruction": instruction, "generation": data["choices"][0]["message"]["content"]}

        return await asyncio.gather(*(one(i) for i in range(count)))


rows = asyncio.run(main())
with open(out + "/answer.jsonl", "w") as file:
    for row in rows:
        file.write(json.dumps(row) + "\\n")
_report(len(rows))
""".replace("MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))
)

TASKLOOM = (
    _REPORT
    + """
import sys
from taskloom import Pipeline, get_llm, get_task

url, count, concurrency, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = get_llm("openai", model="latency", base_url=url + "/v1", api_key="bench", max_concurrency=concurrency,
              generation_kwargs={"max_new_tokens": MAX_NEW_TOKENS})
task = get_task("text-generation", name="answer", llm=llm)
rows = [{"instruction": f"Write a haiku about number {i}."} for i in range(count)]
result = Pipeline(task, source=rows, name="whole").run(output=out, progress=None)
_report(result.stats.steps["answer"].rows_out)
""".replace("MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))
)

CLIENTS = {"plain aiohttp": PLAIN, "taskloom": TASKLOOM}


def _server(url: str, path: str, data: bytes | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}", data=data, timeout=10) as response:
        loaded: dict[str, Any] = json.loads(response.read())
        return loaded


def run_once(script: Path, url: str, rows: int, concurrency: int, work: Path) -> dict[str, Any]:
    """One fresh process doing the whole job; what it and the server saw."""
    _server(url, "/reset", b"")
    out = Path(tempfile.mkdtemp(dir=work))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), url, str(rows), str(concurrency), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    exited = time.monotonic()
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed:\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    seen = _server(url, "/stats")
    if child["rows"] != rows or seen["requests"] != rows:
        raise RuntimeError(f"{script.name}: {child['rows']} rows written, {seen['requests']} requests for {rows}")
    return {
        "wall": exited - start,
        "first_request": seen["first_request_monotonic"] - start,
        "last_answer_to_exit": exited - seen["last_response_monotonic"],
        "max_in_flight": seen["max_in_flight"],
        "cpu_ms_per_row": child["cpu"] / rows * 1e3,
        "peak_mb": child["peak_mb"],
    }


def measure(
    rows: int = 1000, repeat: int = 3, concurrencies: tuple[int, ...] = CONCURRENCIES, delay: float = 0.2
) -> dict[str, Any]:
    compile_sources()
    process, url = start_server(delay)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="whole-run-") as folder:
            work = Path(folder)
            scripts = {}
            for name, code in CLIENTS.items():
                # client_*.py: a script named taskloom.py would shadow the package it imports
                scripts[name] = work / f"client_{name.replace(' ', '_')}.py"
                scripts[name].write_text(code)
            for name in CLIENTS:  # warm the disk cache of every import, once
                run_once(scripts[name], url, 20, 20, work)
            for concurrency in concurrencies:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CLIENTS}
                for _ in range(repeat):
                    for name in CLIENTS:
                        runs[name].append(run_once(scripts[name], url, rows, concurrency, work))
                results[concurrency] = {
                    name: {key: statistics.median(run[key] for run in measured) for key in measured[0]}
                    for name, measured in runs.items()
                }
    finally:
        process.terminate()
        process.wait(10)
    summary: dict[int, dict[str, Any]] = {}
    for concurrency, by_client in results.items():
        ours, plain = by_client["taskloom"], by_client["plain aiohttp"]
        ratio = plain["wall"] / ours["wall"]
        start_ratio = ours["first_request"] / plain["first_request"]
        summary[concurrency] = {
            "clients": by_client,
            "ratio": ratio,
            "start_ratio": start_ratio,
            "met": ratio >= TARGET_RATIO and start_ratio <= TARGET_START_RATIO,
        }
    return {"rows": rows, "repeat": repeat, "delay": delay, "by_concurrency": summary}


def report(result: dict[str, Any]) -> None:
    print(
        f"whole runs, {result['rows']} rows of text-generation, a fresh process each, server latency "
        f"{result['delay'] * 1e3:.0f} ms, alternating, medians of {result['repeat']}:"
    )
    header = (
        f"  {'in flight':>9}  {'client':<14} {'whole run':>9} {'rows/s':>7} {'to 1st req':>10} "
        f"{'last->exit':>10} {'server saw':>10} {'CPU/row':>8} {'peak':>7}"
    )
    print(header)
    for concurrency, data in result["by_concurrency"].items():
        for name, figures in data["clients"].items():
            print(
                f"  {concurrency:>9}  {name:<14} {figures['wall']:8.2f}s {result['rows'] / figures['wall']:7.0f} "
                f"{figures['first_request'] * 1e3:8.0f}ms {figures['last_answer_to_exit'] * 1e3:8.0f}ms "
                f"{figures['max_in_flight']:10.0f} {figures['cpu_ms_per_row']:6.2f}ms {figures['peak_mb']:5.0f}MB"
            )
        status = "met" if data["met"] else "MISSED"
        print(
            f"  {'':>9}  taskloom / plain: speed {data['ratio']:.2f}x (target >= {TARGET_RATIO}x), "
            f"start to first request {data['start_ratio']:.2f}x (target <= {TARGET_START_RATIO}x): {status}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    report(measure(args.rows, args.repeat, tuple(args.concurrency), args.delay))


if __name__ == "__main__":
    main()
