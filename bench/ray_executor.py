"""The Ray executor against the local one: whole runs in fresh processes, on one Ray cluster.

``taskloom-ray`` cuts the source into shards and runs each whole on a worker actor with the local
engine, so a run on Ray pays what a local run pays plus joining the cluster, starting the worker
processes (each imports taskloom and unpickles the pipeline) and a local run's set-up per shard.
Against an API bound by its latency, more workers only help while the CPU keeps up; on one
machine they compete for the same cores as the driver and the server. So this times what a user
feels, as ``whole_run.py`` does: a fresh interpreter per run, from just before ``Popen`` to its
exit, for a ``Pipeline.run`` of 2,000 rows of ``text-generation`` through ``taskloom-openai``
against ``latency_server.py`` answering after 200 ms in its own process:

* the local executor with 256 in flight against the Ray executor with 2 workers of 128 in flight
  each (``shards_per_worker=1``, ``shard_rows=500``, the executor's default: 4 shards, 2 per
  worker), target: Ray at least 0.8x the local executor's rows per second while it generates
  (from the first request to the last answer), which is Ray's own overhead on the work; process
  start to first request, where joining the cluster and starting the workers goes, is reported
  beside it, with the rows per second over the whole run;
* 1, 2 and 4 Ray workers of 128 in flight each, for the curve. On a machine with few cores it
  flattens once the CPU is the limit; the busy column says how much of the machine's CPU the
  run (driver, Ray's processes, the server) used, and how much the whole machine did.

Every run joins ONE cluster started for the whole benchmark (``ray start --head --block`` on
loopback, its boot timed once for information), so each run pays the connect and the workers'
start but not the cluster's boot, as a user of a running cluster does; it gets a fresh output
folder, so nothing is cached. The sides alternate within each round, medians of ``--repeat``.
Per run: from the server (``/stats``) the most requests in flight at once, when the first arrived
(against the time just before ``Popen``) and when the last answer left, which also gives the rows
per second of the generation alone; the child's CPU, and the CPU of every process of the Ray
cluster (its workers, raylet, GCS) over the run, from ``/proc`` (Linux), read every 0.1 s while
each lives (the raylet ignores ``SIGCHLD``, so a finished worker's CPU reaches no parent). Each
run must have written 2,000 rows (``answer.jsonl`` locally, ``data/answer/part-*.jsonl`` on Ray)
and the server must have seen 2,000 requests, else the benchmark stops. The drivers and the
cluster share ``RAY_AUTH_MODE`` (token unless set: Ray's own default for ``ray start``, and a
driver without it cannot join), and the cluster is stopped through its own process (``--block``
ends what it started on SIGTERM), not with ``ray stop``, which would end every Ray on the machine.

    .venv/bin/python bench/ray_executor.py [--rows 2000] [--repeat 3] [--workers 1 2 4] [--shard-rows 500]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openai_throughput import compile_sources, free_port, start_server

TARGET_RATIO = 0.8
COMPARED_WORKERS = 2
WORKERS = (1, 2, 4)
LOCAL_CONCURRENCY = 256
WORKER_CONCURRENCY = 128
SHARD_ROWS = 500
MAX_NEW_TOKENS = 128
RUN_TIMEOUT_S = 300
CLUSTER_BOOT_TIMEOUT_S = 120
VENV_BIN = Path(sys.executable).parent

CHILD = """
import json, resource, sys
from taskloom import Pipeline, get_llm, get_task

url, count, concurrency, out, executor = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if executor == "ray":
    from taskloom.registry import get_executor

    address, workers, shard_rows = sys.argv[6], int(sys.argv[7]), int(sys.argv[8])
    executor = get_executor("ray", address=address, workers=workers, shards_per_worker=1, shard_rows=shard_rows)
llm = get_llm("openai", model="latency", base_url=url + "/v1", api_key="bench", max_concurrency=concurrency,
              generation_kwargs={"max_new_tokens": MAX_NEW_TOKENS})
task = get_task("text-generation", name="answer", llm=llm)
rows = [{"instruction": f"Write a haiku about number {i}."} for i in range(count)]
result = Pipeline(task, source=rows, name="ray-bench").run(output=out, progress=None, executor=executor)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "rows": result.stats.steps["answer"].rows_out}))
""".replace("MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))


def _server(url: str, path: str, data: bytes | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}{path}", data=data, timeout=10) as response:
        loaded: dict[str, Any] = json.loads(response.read())
        return loaded


_TOKEN = secrets.token_hex(16)
"""The benchmark's own token, for a machine that has none (``ray start`` in token mode refuses to boot)."""


def _environment() -> dict[str, str]:
    """What the cluster and every child run with: no usage reports, one authentication mode and token."""
    environment = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # ``ray start --block`` stops at once on SIGTERM
    }
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if environment["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in environment and not token_file.is_file():
        environment["RAY_AUTH_TOKEN"] = _TOKEN
    return environment


def _processes() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds so far, its reaped children's included (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (int(fields[1]), sum(int(field) for field in fields[11:15]) / tick)
    return found


def _machine() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in ticks (``/proc/stat``), whoever used it."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # not idle, not waiting for the disk


def _tree(root: int) -> dict[int, float]:
    """The CPU seconds of ``root`` and of every process under it, by pid."""
    processes = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, float] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in processes:
            found[pid] = processes[pid][1]
            todo.extend(children.get(pid, []))
    return found


class Cluster:
    """One Ray head on loopback for the whole benchmark, stopped (by its own pid) at the end."""

    def __init__(self, cpus: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rb-"))  # short: Ray's socket paths live under it
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.cpus = cpus
        self.log = self.folder / "ray-start.log"
        command = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
        command += ["--port", str(self.port), "--num-cpus", str(cpus), "--include-dashboard=false"]
        command += ["--disable-usage-stats", "--temp-dir", str(self.folder / "ray")]
        for option in ("--dashboard-port", "--dashboard-agent-listen-port"):
            command += [option, str(free_port())]  # not the defaults, which another cluster may hold
        start = time.monotonic()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_environment())
        try:
            while "Ray runtime started" not in self.log.read_text(errors="replace"):
                if self.process.poll() is not None or time.monotonic() - start > CLUSTER_BOOT_TIMEOUT_S:
                    raise RuntimeError(f"the Ray cluster did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        self.boot_s = time.monotonic() - start

    @contextlib.contextmanager
    def cpu(self) -> Iterator[dict[str, float]]:
        """The CPU seconds every process of the cluster spends inside the block, in ``["cpu"]``.

        The raylet ignores ``SIGCHLD``, so a worker's CPU never reaches its parent's ``cutime``
        when it ends: each process is read every 0.1 s while it lives, and counted up to the last
        reading. After the block, the processes it started (the run's workers) are waited for.
        """
        before = _tree(self.process.pid)
        seen = dict(before)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                seen.update(_tree(self.process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        figures = {"cpu": 0.0}
        try:
            yield figures
        finally:
            deadline = time.monotonic() + 15
            while set(_tree(self.process.pid)) - set(before) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            sampler.join()
            seen.update(_tree(self.process.pid))
            figures["cpu"] = sum(cpu - before.get(pid, 0.0) for pid, cpu in seen.items())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _rows_written(out: Path, on_ray: bool) -> int:
    files = sorted(out.glob("data/answer/part-*.jsonl")) if on_ray else [out / "answer.jsonl"]
    count = 0
    for path in files:
        with path.open(encoding="utf-8") as handle:
            count += sum(1 for line in handle if line.strip())
    return count


def _shard_seconds(out: Path) -> list[float]:
    return [json.loads(path.read_text())["seconds"] for path in sorted(out.glob("data/_manifests/part-*.json"))]


def run_once(
    script: Path,
    url: str,
    server_pid: int,
    cluster: Cluster,
    rows: int,
    workers: int | None,
    shard_rows: int,
    work: Path,
) -> dict[str, Any]:
    """One fresh process doing the whole job, locally (``workers`` None) or on the cluster."""
    on_ray = workers is not None
    concurrency = WORKER_CONCURRENCY if on_ray else LOCAL_CONCURRENCY
    command = [sys.executable, str(script), url, str(rows), str(concurrency)]
    out = Path(tempfile.mkdtemp(dir=work)) / "run"
    command += [str(out), "ray" if on_ray else "local"]
    if on_ray:
        command += [cluster.address, str(workers), str(shard_rows)]
    _server(url, "/reset", b"")
    server_before = sum(_tree(server_pid).values())
    with cluster.cpu() as used:
        machine_before = _machine()
        start = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=_environment())
        exited = time.monotonic()
        machine_after = _machine()
        server_cpu = sum(_tree(server_pid).values()) - server_before
    if done.returncode != 0:
        raise RuntimeError(f"the {'ray' if on_ray else 'local'} run failed:\n{done.stderr[-3000:]}")
    seen = _server(url, "/stats")
    cluster_cpu = used["cpu"]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    written = _rows_written(out, on_ray)
    if child["rows"] != rows or written != rows or seen["requests"] != rows:
        raise RuntimeError(
            f"{'ray' if on_ray else 'local'} run: {child['rows']} rows made, {written} rows written, "
            f"{seen['requests']} requests seen, for {rows} rows"
        )
    wall = exited - start
    shards = _shard_seconds(out) if on_ray else []
    shutil.rmtree(out.parent, ignore_errors=True)
    return {
        "wall": wall,
        "rows_per_s": rows / wall,
        "first_request": seen["first_request_monotonic"] - start,
        "generation_rows_per_s": rows / (seen["last_response_monotonic"] - seen["first_request_monotonic"]),
        "last_answer_to_exit": exited - seen["last_response_monotonic"],
        "max_in_flight": seen["max_in_flight"],
        "child_cpu_ms_per_row": child["cpu"] / rows * 1e3,
        "ray_cpu_ms_per_row": cluster_cpu / rows * 1e3,
        "busy": (child["cpu"] + cluster_cpu + server_cpu) / wall / (os.cpu_count() or 1),
        "machine_busy": (machine_after[0] - machine_before[0]) / max(1, machine_after[1] - machine_before[1]),
        "shard_s": statistics.median(shards) if shards else 0.0,
    }


def measure(
    rows: int = 2000,
    repeat: int = 3,
    workers: tuple[int, ...] = WORKERS,
    shard_rows: int = SHARD_ROWS,
    delay: float = 0.2,
) -> dict[str, Any]:
    compile_sources()
    counts = sorted({*workers, COMPARED_WORKERS})
    # the compared Ray side runs right after the local one, every round
    sides: dict[str, int | None] = {"local": None, f"ray x{COMPARED_WORKERS}": COMPARED_WORKERS}
    sides.update({f"ray x{count}": count for count in counts})
    process, url = start_server(delay)
    cluster: Cluster | None = None
    results: dict[str, dict[str, float]] = {}
    try:
        cluster = Cluster(max(4, *counts))
        with tempfile.TemporaryDirectory(prefix="ray-executor-") as folder:
            work = Path(folder)
            script = work / "client_run.py"  # not ray.py nor taskloom.py: it would shadow the package
            script.write_text(CHILD)
            for count in (None, COMPARED_WORKERS):  # warm the disk cache of every import, once
                run_once(script, url, process.pid, cluster, 20, count, 10, work)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
            for _ in range(repeat):
                for name, count in sides.items():
                    runs[name].append(run_once(script, url, process.pid, cluster, rows, count, shard_rows, work))
            results = {  # shown local first, then by workers
                name: {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}
                for name in ["local", *(f"ray x{count}" for count in counts)]
            }
    finally:
        if cluster is not None:
            cluster.stop()
        process.terminate()
        process.wait(10)
    local, ray = results["local"], results[f"ray x{COMPARED_WORKERS}"]
    ratio = ray["rows_per_s"] / local["rows_per_s"]
    curve = {count: results[f"ray x{count}"] for count in counts}
    return {
        "rows": rows,
        "repeat": repeat,
        "delay": delay,
        "shard_rows": shard_rows,
        "cpus": os.cpu_count() or 1,
        "cluster_cpus": cluster.cpus,
        "boot_s": cluster.boot_s,
        "sides": results,
        "local": local,
        "ray": ray,
        "compared_workers": COMPARED_WORKERS,
        "ratio": ratio,
        "generation_ratio": ray["generation_rows_per_s"] / local["generation_rows_per_s"],
        "start_ratio": ray["first_request"] / local["first_request"],
        "target_ratio": TARGET_RATIO,
        "met": ray["generation_rows_per_s"] / local["generation_rows_per_s"] >= TARGET_RATIO,
        "curve": curve,
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"Ray executor against the local one, {result['rows']} rows of text-generation, a fresh process each, "
        f"server latency {result['delay'] * 1e3:.0f} ms, shard_rows {result['shard_rows']}, alternating, medians "
        f"of {result['repeat']}; one Ray cluster of {result['cluster_cpus']} CPUs on this {result['cpus']}-core "
        f"machine, booted once in {result['boot_s']:.1f} s (not counted):"
    )
    print(
        f"  {'executor':<8} {'in flight':>10} {'whole run':>9} {'rows/s':>7} {'to 1st req':>10} {'gen rows/s':>10} "
        f"{'last->exit':>10} {'server saw':>10} {'CPU/row child+ray':>17} {'busy':>9} {'shard':>6}"
    )
    for name, figures in result["sides"].items():
        count = int(name.removeprefix("ray x")) if name.startswith("ray") else None
        flight = f"{count}x{WORKER_CONCURRENCY}" if count else str(LOCAL_CONCURRENCY)
        cpu = f"{figures['child_cpu_ms_per_row']:.2f}+{figures['ray_cpu_ms_per_row']:.2f}ms"
        shard = f"{figures['shard_s']:5.2f}s" if count else "-"
        print(
            f"  {name:<8} {flight:>10} {figures['wall']:8.2f}s {figures['rows_per_s']:7.0f} "
            f"{figures['first_request'] * 1e3:8.0f}ms {figures['generation_rows_per_s']:10.0f} "
            f"{figures['last_answer_to_exit'] * 1e3:8.0f}ms {figures['max_in_flight']:10.0f} {cpu:>17} "
            f"{figures['busy'] * 100:4.0f}/{figures['machine_busy']:4.0%} {shard:>6}"
        )
    status = "met" if result["met"] else "MISSED"
    workers = result["compared_workers"]
    print(
        f"  ray x{workers} / local: rows/s during the generation {result['generation_ratio']:.2f}x (target >= "
        f"{TARGET_RATIO}x): {status}; over the whole run {result['ratio']:.2f}x; process start to first request "
        f"{result['start_ratio']:.2f}x"
    )
    curve = result["curve"]
    print(f"  curve, Ray workers of {WORKER_CONCURRENCY} in flight each (ratios against the line above):")
    previous: dict[str, float] | None = None
    for count, figures in curve.items():
        gains = ["", ""]
        if previous is not None:
            gains = [f" ({figures[key] / previous[key]:.2f}x)" for key in ("rows_per_s", "generation_rows_per_s")]
        print(
            f"    {count} worker{'s' if count > 1 else ' '} {figures['rows_per_s']:5.0f} rows/s{gains[0]:<8} over the "
            f"whole run, {figures['generation_rows_per_s']:5.0f}{gains[1]:<8} during the generation, first request "
            f"{figures['first_request'] * 1e3:5.0f} ms, server saw {figures['max_in_flight']:3.0f}, busy "
            f"{figures['busy']:.0%} (machine {figures['machine_busy']:.0%})"
        )
        previous = figures
    counts = list(curve)
    flat = [
        (a, b)
        for a, b in itertools.pairwise(counts)
        if curve[b]["rows_per_s"] / curve[a]["rows_per_s"] < 1 + (b / a - 1) / 4  # under a quarter of what was added
    ]
    if flat:
        a, b = flat[0]
        print(
            f"  the curve flattens from {a} to {b} workers ({curve[b]['rows_per_s'] / curve[a]['rows_per_s']:.2f}x the "
            f"rows/s for {b / a:g}x the workers): on {result['cpus']} cores the CPU is the limit, shared by the "
            f"workers' start, their requests, the driver and the server (machine {curve[b]['machine_busy']:.0%} busy "
            f"at {b} workers)"
        )
    else:
        print(f"  the curve does not flatten up to {counts[-1]} workers on this {result['cpus']}-core machine")
    ideal = -(-result["shard_rows"] // WORKER_CONCURRENCY) * result["delay"]
    print(
        f"  (latency bound: {WORKER_CONCURRENCY / result['delay']:.0f} rows/s a worker. busy: the CPU of the child, "
        "the cluster and the server over the run's wall time and the machine's cores; machine: the whole machine's, "
        f"whoever used it. shard: median seconds of one shard on its worker, {ideal:.2f} s at the latency bound)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKERS))
    parser.add_argument("--shard-rows", type=int, default=SHARD_ROWS)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args(argv)
    report(measure(args.rows, args.repeat, tuple(args.workers), args.shard_rows, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
