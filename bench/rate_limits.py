"""A whole ``Pipeline`` run against a server that enforces 600 requests a minute, in four modes.

A rate limit is the account's, not the client's, so the question is not how fast the client can
go but how close it comes to the fastest the server allows, and how many refusals it collects on
the way (each one a wasted round trip, and on a real API a retry storm that can outlast the run).
The server is ``python -m taskloom.testing.ratelimited`` in its own process (its CPU is not the
client's): 600 requests a minute, one second of them at once, every answer after 200 ms, and
``429`` with ``Retry-After`` at once for what goes over. 300 rows of ``text-generation`` run
through ``taskloom-openai`` as one ``Pipeline.run`` (``use_cache=False``, a fresh output folder,
``max_concurrency`` at its default of 64, ``retry={"max_attempts": 20}`` so that no mode loses
rows), in modes:

* (a) ``requests_per_minute=600``: the limit is known; target at most 1.1x the ideal time and
  at most 1% of the requests refused;
* (b) no limits set, adaptive (the default), the server sending OpenAI's ``x-ratelimit-*``
  headers: the limit is learnt from them; target at most 1.3x ideal and at most 10% refused;
* (b') the same against a server that sends no limit headers: only the back-off on ``429``
  (AIMD) and ``Retry-After`` are left (for information);
* (c) ``adaptive_concurrency=False``, no limits: a fixed 64 in flight and retries, the
  behaviour before the limiter (for information).

The ideal time is the least any client needs against this server: the first ``burst`` requests
may go at once, every further one waits for the bucket, and the last answer comes ``delay``
later, so ``ideal = (requests - burst) / rate + delay``. Refusals are the server's own count
(``GET /stats``), as a share of every request it received, retries included.

Also the limiter's own CPU per request: ``Limiter.acquire`` + ``release`` in a tight loop, minus
the same loop around two empty calls, with no limit binding and with a requests limit so high it
never waits (target: at most 20 µs).

    .venv/bin/python bench/rate_limits.py [--quick] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from openai_throughput import free_port, launch
from pipeline_throughput import _reset, _server_stats, rows_for

RPM = 600
DELAY = 0.2
BURST_SECONDS = 1.0
CONCURRENCY = 64
RETRY = {"max_attempts": 20}
TARGETS = {"a": (1.1, 0.01), "b": (1.3, 0.10)}
"""Mode -> (most wall time over ideal, most share of requests refused)."""
TARGET_CPU_US = 20.0
MODES: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "a": ("requests_per_minute=600", True, {"requests_per_minute": RPM}),
    "b": ("no limits, adaptive, limit headers", True, {}),
    "b'": ("no limits, adaptive, no limit headers", False, {}),
    "c": ("adaptive_concurrency=False (before)", True, {"adaptive_concurrency": False}),
}
"""Mode -> (what it is, whether the server sends limit headers, the LLM's settings)."""


def start_limited_server(*, headers: bool) -> tuple[subprocess.Popen[bytes], str]:
    """The rate-limited server in a process of its own; its root URL once it answers."""
    port = free_port()
    argv = ["--port", str(port), "--rpm", str(RPM), "--delay", str(DELAY), "--burst-seconds", str(BURST_SECONDS)]
    extra = [] if headers else ["--no-limit-headers"]
    command = [sys.executable, "-m", "taskloom.testing.ratelimited", *argv, *extra]
    return launch(command, f"http://127.0.0.1:{port}", "rate-limited server")


def run_mode(url: str, rows: list[dict[str, str]], settings: dict[str, Any], output: Path) -> dict[str, Any]:
    """One pipeline run into a fresh folder: wall time, rows failed, what the limiter ended with."""
    from taskloom import Pipeline, get_llm, get_task
    from taskloom.llms.limits import forget_limiters

    forget_limiters()  # every mode starts from nothing learnt, as a fresh process would
    _reset(url)  # and against full buckets
    llm = get_llm(
        "openai",
        model="bench",
        base_url=f"{url}/v1",
        api_key="none",
        retry=RETRY,  # max_concurrency left at its default (64), as a user would
        generation_kwargs={"max_new_tokens": 16},
        **settings,
    )
    pipeline = Pipeline(get_task("text-generation", llm=llm), source=rows, name="bench")
    gc.collect()
    start = time.perf_counter()
    result = pipeline.run(output=output, use_cache=False, progress=None)
    elapsed = time.perf_counter() - start
    limiter = llm.limiter()
    return {
        "wall_s": elapsed,
        "rows_done": result.stats.done,
        "rows_failed": sum(step.rows_failed for step in result.stats.steps.values()),
        "limits": limiter.describe() or "-",
        "server": _server_stats(url),
    }


def measure_modes(requests: int, modes: list[str]) -> dict[str, Any]:
    rows = rows_for(requests)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as tmp:
        for headers in (True, False):
            wanted = [mode for mode in modes if MODES[mode][1] == headers]
            if not wanted:
                continue
            process, url = start_limited_server(headers=headers)
            try:
                run_mode(url, rows[:10], {}, Path(tmp) / f"warm-{headers}")  # imports, first-use caches
                for mode in wanted:
                    results[mode] = run_mode(url, rows, MODES[mode][2], Path(tmp) / f"mode-{mode}")
            finally:
                process.terminate()
                process.wait(10)
    burst = int(RPM / 60 * BURST_SECONDS)
    ideal = (requests - burst) / (RPM / 60) + DELAY
    for mode, result in results.items():
        server = result["server"]
        result["ideal_s"] = ideal
        result["ratio"] = result["wall_s"] / ideal
        result["refused"] = server["rate_limited"]
        result["refused_share"] = server["rate_limited"] / max(1, server["requests"])
        if mode in TARGETS:
            most_ratio, most_share = TARGETS[mode]
            result["met"] = (
                result["ratio"] <= most_ratio and result["refused_share"] <= most_share and not result["rows_failed"]
            )
    return {"requests": requests, "burst": burst, "ideal_s": ideal, "modes": results}


# -- the limiter's own CPU ------------------------------------------------------------------------------


class _Nothing:
    """The baseline's stand-in for a limiter: the same two calls, doing nothing."""

    async def acquire(self, tokens: int = 0) -> None:
        return None

    def release(self, permit: None, *, status: int | None = None) -> None:
        return None


async def _loop(limiter: Any, count: int) -> float:
    acquire, release = limiter.acquire, limiter.release
    start = time.perf_counter()
    for _ in range(count):
        permit = await acquire(0)
        release(permit, status=200)
    return time.perf_counter() - start


def measure_cpu(count: int = 200_000, repeat: int = 5) -> dict[str, Any]:
    """µs per request of ``acquire`` + ``release``, minus the empty loop's, best of ``repeat``."""
    from taskloom.llms.limits import Limiter

    def unlimited() -> Limiter:
        limiter = Limiter("bench")
        limiter.configure(None, None, CONCURRENCY, True)
        return limiter

    def never_waits() -> Limiter:
        limiter = Limiter("bench")
        limiter.configure(1e12, None, CONCURRENCY, True)  # refills a million times faster than we ask
        return limiter

    makers = {"baseline": _Nothing, "no limit": unlimited, "rpm never waiting": never_waits}
    best = {name: float("inf") for name in makers}
    for _ in range(repeat):
        for name, make in makers.items():
            gc.collect()
            best[name] = min(best[name], asyncio.run(_loop(make(), count)))
    per_request = {name: (best[name] - best["baseline"]) / count * 1e6 for name in makers if name != "baseline"}
    return {
        "cpu_us_per_request": per_request,
        "baseline_us": best["baseline"] / count * 1e6,
        "cpu_met": max(per_request.values()) <= TARGET_CPU_US,
    }


def measure(requests: int = 300, modes: list[str] | None = None) -> dict[str, Any]:
    result = measure_modes(requests, modes or list(MODES))
    result.update(measure_cpu())
    result.update(rpm=RPM, delay=DELAY, burst_seconds=BURST_SECONDS, concurrency=CONCURRENCY)
    return result


def report(result: dict[str, Any]) -> None:
    rate = RPM / 60
    print(
        f"rate limits, {result['requests']} rows of text-generation via taskloom-openai (Pipeline.run), "
        f"{CONCURRENCY} in flight at most, against a server enforcing {RPM} req/min "
        f"({result['burst']} at once), {DELAY * 1e3:.0f} ms per answer:"
    )
    print(
        f"  ideal = (requests - burst) / rate + delay = ({result['requests']} - {result['burst']}) / {rate:g}/s "
        f"+ {DELAY:g} s = {result['ideal_s']:.1f} s, the least time any client needs against this server"
    )
    print(f"  {'mode':<45} {'wall':>7} {'ratio':>6} {'429s':>13} {'failed':>6}  limits at the end; target")
    for mode in [mode for mode in MODES if mode in result["modes"]]:
        run = result["modes"][mode]
        refused = f"{run['refused']} ({run['refused_share']:.1%})"
        if mode in TARGETS:
            most_ratio, most_share = TARGETS[mode]
            target = f"<= {most_ratio}x, <= {most_share:.0%} 429: {'met' if run['met'] else 'MISSED'}"
        else:
            target = "(information)"
        label = f"({mode}) {MODES[mode][0]}"
        print(
            f"  {label:<45} {run['wall_s']:6.1f}s {run['ratio']:5.2f}x {refused:>13} {run['rows_failed']:>6}  "
            f"{run['limits']}; {target}"
        )
    cpu = result["cpu_us_per_request"]
    print(
        "  limiter CPU per request (acquire + release, minus an empty loop of "
        f"{result['baseline_us']:.2f} us): "
        + ", ".join(f"{name} {us:.2f} us" for name, us in cpu.items())
        + f" (target <= {TARGET_CPU_US:.0f} us): {'met' if result['cpu_met'] else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None, help="rows per mode (default 300, --quick 100)")
    parser.add_argument("--quick", action="store_true", help="100 rows per mode instead of 300")
    parser.add_argument("--modes", default=",".join(MODES), help="which modes, comma-separated (default: all)")
    args = parser.parse_args()
    requests = args.requests or (100 if args.quick else 300)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from {', '.join(MODES)}")
    report(measure(requests, modes))


if __name__ == "__main__":
    main()
