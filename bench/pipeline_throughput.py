"""A whole ``Pipeline`` run against plain asyncio over the same client: speed, CPU, start-up, memory.

``openai_throughput.py`` measures the provider alone; this measures what the pipeline adds on top
of it (the source, the DAG executor, the cache lookups, row building, the ordered JSONL sink), on
the same ground: ``latency_server.py`` in its own process, 1,000 rows of ``text-generation`` through
``taskloom-openai`` with 256 requests in flight, and as the baseline the least code that can do the
work (``asyncio.gather`` under a semaphore over the same client: plain aiohttp, since taskloom's
OpenAI plugin posts chat completions with its own aiohttp session; reused from
``openai_throughput``). Four figures, each with its target:

* rows per second, pipeline over baseline, alternating rounds, best of ``--repeat`` (at least 0.9x);
  the provider alone (``get_llm("openai").generate``) runs in the same rounds, for context;
* framework CPU per row: the pipeline round's process CPU time minus the baseline round's, per
  row (at most 0.3 ms). Wall time hides CPU while requests wait, but on a busy machine, or with a
  faster server, that CPU is what caps throughput;
* process start to first request: a fresh interpreter running the same 1,000-row pipeline, timed
  from just before ``Popen`` to the first request the server saw (at most 0.5 s). A CLI user
  waits this long before anything happens;
* peak memory of a fresh process after 1,000 rows, and after 100,000 rows streamed from a JSONL
  file (at most 100 MB, and "flat": the large run within 1.2x of the small one), since the
  executor promises constant memory whatever the source's length. Both runs use a 1 ms server so
  the large one finishes quickly; if it would still take more than about three minutes it runs
  20,000 rows instead, and says so. The peak is the child's ``VmHWM`` where Linux has it, not its
  ``ru_maxrss``: Python starts children with vfork + exec, and Linux carries the parent's peak
  over into the child's ``ru_maxrss``, so every child of this (by then ~90 MB) process would
  report at least that. ``ru_maxrss`` is the figure elsewhere, and is printed beside it.

    .venv/bin/python bench/pipeline_throughput.py [--rows 1000] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai_throughput
from openai_throughput import run_baseline, run_taskloom, start_server

TARGET_RATIO = 0.95
TARGET_CPU_MS_PER_ROW = 0.3
TARGET_START_S = 0.5
TARGET_MEMORY_MB = 100.0
TARGET_FLAT = 1.2
MEMORY_DELAY = 0.001
"""Server latency of the memory runs: memory does not depend on it, the run time does."""
MEMORY_BUDGET_S = 180.0
"""Above this estimated run time the large memory run uses ``FALLBACK_ROWS`` instead."""
FALLBACK_ROWS = 20_000
MAX_TOKENS = 16
"""What the baseline asks for (``max_tokens=16``): the pipeline sends the same request body."""

HERE = Path(__file__).resolve().parent

# The start of both child scripts: their peak memory in MB, as the high-water mark of their own
# address space (Linux's VmHWM) and as ru_maxrss, which after vfork + exec holds the parent's peak.
_PEAK = """\
import json, resource, sys, time


def peak():
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = {"maxrss_mb": maxrss / (1 << 20) if sys.platform == "darwin" else maxrss / 1024}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    found["hwm_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    found["peak_mb"] = found.get("hwm_mb", found["maxrss_mb"])
    return found

"""

# The start-up and memory runs, in a fresh interpreter: argv is url, source ("-" for rows built in
# memory, else a JSONL path), row count, output folder, max_new_tokens. It reports when its
# imports were done and when run() was called, so a slow start can be told apart.
CHILD = (
    _PEAK
    + """\
from taskloom import Pipeline, get_llm, get_task

imported = time.monotonic()
url, source, rows, output, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
if source == "-":
    source = [{"instruction": f"Question {i}: what is {i} + {i}?"} for i in range(rows)]
llm = get_llm(
    "openai", model="bench", base_url=url, api_key="none", max_concurrency=256,
    generation_kwargs={"max_new_tokens": max_tokens},
)
pipeline = Pipeline(get_task("text-generation", llm=llm), source=source, name="bench")
started = time.monotonic()
result = pipeline.run(output=output, use_cache=False, progress=None)
finished = time.monotonic()
print(json.dumps({
    "imported": imported, "run_called": started, "run_s": finished - started,
    "done": result.stats.done, "failed": result.stats.failed, **peak(),
}))
"""
)

# The same work without taskloom (openai_throughput's baseline), for context: argv is this
# folder, url, row count.
PLAIN_CHILD = (
    _PEAK
    + """\
sys.path.insert(0, sys.argv[1])
import openai_throughput

openai_throughput.run_baseline(sys.argv[2], int(sys.argv[3]), 256)
print(json.dumps(peak()))
"""
)

# What `import openai` alone costs a fresh interpreter: a floor under any start-up with the SDK.
OPENAI_IMPORT = "import time; t = time.perf_counter(); import openai; print(time.perf_counter() - t)"


def rows_for(count: int) -> list[dict[str, str]]:
    """The baseline's prompts, as ``text-generation`` rows: both sides send the same requests."""
    return [{"instruction": chat[0]["content"]} for chat in openai_throughput.chats(count)]


class _UnclosedSessions(logging.Filter):
    """Counts (and keeps off the screen) aiohttp's "Unclosed client session" reports.

    They appear when an LLM's client outlives the event loop it was opened on: the session can then
    never be closed. The count is reported, since it is a leak of the framework's, not noise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Unclosed client session"):
            self.count += 1
            return False
        return not message.startswith("Unclosed connector")


@contextlib.contextmanager
def _counting_unclosed() -> Iterator[_UnclosedSessions]:
    counter = _UnclosedSessions()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addFilter(counter)
    try:
        yield counter
    finally:
        gc.collect()  # a leaked session is reported when it is collected
        asyncio_logger.removeFilter(counter)


def run_pipeline(base_url: str, rows: list[dict[str, str]], concurrency: int, output: Path) -> tuple[float, float]:
    """One pipeline round into a fresh folder, no cache: (wall seconds, process CPU seconds)."""
    from taskloom import Pipeline, get_llm, get_task

    start, cpu = time.perf_counter(), time.process_time()
    llm = get_llm(
        "openai",
        model="bench",
        base_url=f"{base_url}/v1",
        api_key="none",
        max_concurrency=concurrency,
        generation_kwargs={"max_new_tokens": MAX_TOKENS},
    )
    pipeline = Pipeline(get_task("text-generation", llm=llm), source=rows, name="bench")
    result = pipeline.run(output=output, use_cache=False, progress=None)
    elapsed, used = time.perf_counter() - start, time.process_time() - cpu
    stats = result.stats
    if stats.done != len(rows) or stats.failed:
        raise RuntimeError(f"pipeline round wrote {stats.done} of {len(rows)} rows, {stats.failed} failed")
    return elapsed, used


def _server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/stats", timeout=10) as response:
        stats: dict[str, Any] = json.loads(response.read())
    return stats


def _reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/reset", method="POST"), timeout=10).close()


def _child(argv: list[str], what: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _run_text(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout.strip()


def measure_throughput(url: str, rows: int, concurrency: int, repeat: int, work: Path) -> dict[str, Any]:
    """Alternating rounds of the baseline, the pipeline and (for context) the provider alone."""
    data = rows_for(rows)
    sides = ("baseline", "pipeline", "provider")
    with _counting_unclosed() as unclosed:
        run_baseline(url, 50, concurrency)  # warm every path: imports, first-use caches
        run_pipeline(url, data[:50], concurrency, work / "warm")
        run_taskloom(url, 50, concurrency)
        walls: dict[str, list[float]] = {name: [] for name in sides}
        cpus: dict[str, list[float]] = {name: [] for name in sides}
        for round_ in range(repeat):
            for name in sides:
                gc.collect()
                if name == "baseline":
                    elapsed, cpu = run_baseline(url, rows, concurrency)
                elif name == "pipeline":
                    elapsed, cpu = run_pipeline(url, data, concurrency, work / f"round-{round_}")
                else:  # get_llm("openai").generate(...): the provider without the pipeline around it
                    elapsed, cpu = run_taskloom(url, rows, concurrency)
                walls[name].append(elapsed)
                cpus[name].append(cpu)
    rate = {name: rows / min(times) for name, times in walls.items()}
    # The least CPU each side needed: CPU time is noisy upwards only (the server, other work).
    cpu_ms = {name: min(times) / rows * 1e3 for name, times in cpus.items()}
    framework = cpu_ms["pipeline"] - cpu_ms["baseline"]
    return {
        "rows_per_s": rate,
        "ratio": rate["pipeline"] / rate["baseline"],
        "ratio_met": rate["pipeline"] / rate["baseline"] >= TARGET_RATIO,
        "cpu_ms_per_row": cpu_ms,
        "framework_cpu_ms_per_row": framework,
        "pipeline_over_provider_cpu_ms_per_row": cpu_ms["pipeline"] - cpu_ms["provider"],
        "cpu_met": framework <= TARGET_CPU_MS_PER_ROW,
        "unclosed_sessions": unclosed.count,
        "rounds": {"wall_s": walls, "cpu_s": cpus},
    }


def measure_start(url: str, rows: int, repeat: int, work: Path) -> dict[str, Any]:
    """Fresh interpreters, from just before ``Popen`` to the server's first request: median of runs."""
    script = work / "pipeline_child.py"
    script.write_text(CHILD)
    plain = work / "plain_child.py"
    plain.write_text(PLAIN_CHILD)
    # The monotonic clock is shared between processes on Linux; elsewhere use the wall clock.
    shared = sys.platform.startswith("linux")
    key = "first_request_monotonic" if shared else "first_request_at"
    clock = time.monotonic if shared else time.time
    pipeline: list[float] = []
    imports: list[float] = []
    build: list[float] = []
    plain_times: list[float] = []
    for round_ in range(repeat):
        for name in ("pipeline", "plain"):
            _reset(url)
            if name == "pipeline":
                argv = [str(script), f"{url}/v1", "-", str(rows), str(work / f"start-{round_}"), str(MAX_TOKENS)]
            else:
                argv = [str(plain), str(HERE), url, str(rows)]
            before = clock()
            report = _child(argv, f"{name} start-up run")
            first = _server_stats(url)[key]
            if name == "plain":
                plain_times.append(first - before)
                continue
            pipeline.append(first - before)
            if shared:  # the child's own clock readings split the time up
                imports.append(report["imported"] - before)
                build.append(report["run_called"] - report["imported"])
    openai_import = [float(_run_text([sys.executable, "-c", OPENAI_IMPORT])) for _ in range(repeat)]
    start = statistics.median(pipeline)
    return {
        "openai_import_s": statistics.median(openai_import),
        "start_s": start,
        "start_met": start <= TARGET_START_S,
        "plain_start_s": statistics.median(plain_times),
        "interpreter_and_imports_s": statistics.median(imports) if imports else None,
        "build_s": statistics.median(build) if build else None,
        "run_to_request_s": start - statistics.median(imports) - statistics.median(build) if imports else None,
    }


def _jsonl(path: Path, count: int) -> Path:
    """``rows_for(count)`` as a JSONL file, one row at a time, so this process's own peak stays low."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):  # openai_throughput.chats' prompt
            handle.write(json.dumps({"instruction": f"Question {i}: what is {i} + {i}?"}) + "\n")
    return path


def measure_memory(rows: int, large_rows: int | None, work: Path) -> dict[str, Any]:
    """Peak RSS of fresh processes after ``rows`` and after many more rows, streamed from JSONL."""
    script = work / "pipeline_child.py"
    script.write_text(CHILD)
    plain = work / "plain_child.py"
    plain.write_text(PLAIN_CHILD)
    process, url = start_server(MEMORY_DELAY)
    try:
        small = _child(
            [
                str(script),
                f"{url}/v1",
                str(_jsonl(work / "small.jsonl", rows)),
                "0",
                str(work / "mem-small"),
                str(MAX_TOKENS),
            ],
            "small memory run",
        )
        baseline = _child([str(plain), str(HERE), url, str(rows)], "plain memory run")
        note = ""
        if large_rows is None:
            # The small run's pace says how long the large one would take.
            estimate = small["run_s"] / rows * 100_000
            large_rows = 100_000 if estimate <= MEMORY_BUDGET_S else FALLBACK_ROWS
            if large_rows != 100_000:
                note = (
                    f"100,000 rows would take about {estimate:.0f} s here (> {MEMORY_BUDGET_S:.0f} s): "
                    f"ran {large_rows:,} rows instead"
                )
        source = _jsonl(work / "large.jsonl", large_rows)
        argv = [str(script), f"{url}/v1", str(source), "0", str(work / "mem-large"), str(MAX_TOKENS)]
        large = _child(argv, "large memory run")
    finally:
        process.terminate()
        process.wait(10)
    for report, count in ((small, rows), (large, large_rows)):
        if report["done"] != count or report["failed"]:
            raise RuntimeError(f"memory run wrote {report['done']} of {count} rows, {report['failed']} failed")
    small_mb, large_mb = small["peak_mb"], large["peak_mb"]
    return {
        "memory_rows": rows,
        "memory_large_rows": large_rows,
        "memory_note": note,
        "memory_mb": small_mb,
        "memory_large_mb": large_mb,
        "memory_plain_mb": baseline["peak_mb"],
        "memory_maxrss_mb": {"small": small["maxrss_mb"], "large": large["maxrss_mb"]},
        "memory_measure": "VmHWM" if "hwm_mb" in small else "ru_maxrss",
        "memory_large_run_s": large["run_s"],
        "memory_growth": large_mb / small_mb,
        "memory_met": small_mb <= TARGET_MEMORY_MB,
        "flat_met": large_mb / small_mb <= TARGET_FLAT,
    }


def profile_round(rows: int = 1000, concurrency: int = 256, delay: float = 0.2, top: int = 25) -> str:
    """cProfile of one pipeline round (after a warm-up), by own time: where the framework's CPU goes."""
    process, url = start_server(delay)
    try:
        with tempfile.TemporaryDirectory() as tmp, _counting_unclosed():
            data = rows_for(rows)
            run_pipeline(url, data[:50], concurrency, Path(tmp) / "warm")
            profiler = cProfile.Profile()
            profiler.enable()
            run_pipeline(url, data, concurrency, Path(tmp) / "profiled")
            profiler.disable()
    finally:
        process.terminate()
        process.wait(10)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def measure(
    rows: int = 1000,
    concurrency: int = 256,
    delay: float = 0.2,
    repeat: int = 5,
    large_rows: int | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as tmp:
        work = Path(tmp)
        process, url = start_server(delay)
        try:
            result = measure_throughput(url, rows, concurrency, repeat, work)
            result.update(measure_start(url, rows, repeat, work))
        finally:
            process.terminate()
            process.wait(10)
        result.update(measure_memory(rows, large_rows, work))
    result.update(
        rows=rows,
        concurrency=concurrency,
        delay=delay,
        ceiling=concurrency / delay,
        target_ratio=TARGET_RATIO,
        target_cpu_ms_per_row=TARGET_CPU_MS_PER_ROW,
        target_start_s=TARGET_START_S,
        target_memory_mb=TARGET_MEMORY_MB,
        target_flat=TARGET_FLAT,
    )
    return result


def report(result: dict[str, Any]) -> None:
    def status(ok: bool) -> str:
        return "met" if ok else "MISSED"

    rate, cpu = result["rows_per_s"], result["cpu_ms_per_row"]
    print(
        f"pipeline, {result['rows']} rows of text-generation via taskloom-openai, {result['concurrency']} in flight, "
        f"server latency {result['delay'] * 1e3:.0f} ms (ceiling {result['ceiling']:.0f} rows/s), best of runs:"
    )
    print(f"  plain asyncio {rate['baseline']:8.1f} rows/s   process CPU {cpu['baseline']:.3f} ms/row")
    print(f"  pipeline      {rate['pipeline']:8.1f} rows/s   process CPU {cpu['pipeline']:.3f} ms/row")
    print(
        f"  provider only {rate['provider']:8.1f} rows/s   process CPU {cpu['provider']:.3f} ms/row "
        "(get_llm('openai').generate, for context)"
    )
    print(
        f"  ratio pipeline / plain asyncio: {result['ratio']:.2f}x (target >= {TARGET_RATIO}x): "
        f"{status(result['ratio_met'])}"
    )
    print(
        f"  framework CPU on top of the client's: {result['framework_cpu_ms_per_row']:.3f} ms/row "
        f"(target <= {TARGET_CPU_MS_PER_ROW} ms): {status(result['cpu_met'])}; "
        f"on top of the provider alone: {result['pipeline_over_provider_cpu_ms_per_row']:.3f} ms/row"
    )
    print(
        f"  process start to first request: {result['start_s'] * 1e3:.0f} ms "
        f"(target <= {TARGET_START_S * 1e3:.0f} ms): {status(result['start_met'])}; "
        f"plain aiohttp script: {result['plain_start_s'] * 1e3:.0f} ms"
    )
    if result.get("interpreter_and_imports_s") is not None:
        print(
            f"    interpreter + imports {result['interpreter_and_imports_s'] * 1e3:.0f} ms, "
            f"building the pipeline {result['build_s'] * 1e3:.0f} ms, "
            f"run() to first request {result['run_to_request_s'] * 1e3:.0f} ms; "
            f"`import openai` alone takes {result['openai_import_s'] * 1e3:.0f} ms"
        )
    print(
        f"  peak memory after {result['memory_rows']:,} rows: {result['memory_mb']:.1f} MB "
        f"(target <= {TARGET_MEMORY_MB:.0f} MB): {status(result['memory_met'])}; "
        f"plain aiohttp script: {result['memory_plain_mb']:.1f} MB"
    )
    print(
        f"  peak memory after {result['memory_large_rows']:,} rows streamed from JSONL: "
        f"{result['memory_large_mb']:.1f} MB = {result['memory_growth']:.2f}x "
        f"(target <= {TARGET_FLAT}x): {status(result['flat_met'])} "
        f"(ran in {result['memory_large_run_s']:.0f} s at {MEMORY_DELAY * 1e3:.0f} ms latency)"
    )
    if result["memory_note"]:
        print(f"    {result['memory_note']}")
    maxrss = result["memory_maxrss_mb"]
    print(
        f"    peak = the child's {result['memory_measure']}; its ru_maxrss (which also holds this process's "
        f"peak, inherited through vfork + exec): {maxrss['small']:.1f} / {maxrss['large']:.1f} MB"
    )
    if result["unclosed_sessions"]:
        print(
            f"  note: {result['unclosed_sessions']} aiohttp client sessions were left unclosed by pipeline runs "
            "(the LLM's client outlives the run's event loop)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large-rows", type=int, default=None, help="rows of the large memory run (default: auto)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one pipeline round instead")
    args = parser.parse_args()
    if args.profile:
        print(profile_round(args.rows, args.concurrency, args.delay))
        return
    report(measure(args.rows, args.concurrency, args.delay, args.repeat, args.large_rows))


if __name__ == "__main__":
    main()
