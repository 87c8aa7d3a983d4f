"""Tokens per second of the local model through a whole ``Pipeline``, against ``task.process`` and a plain loop.

``llamacpp_throughput.py`` measures ``task.process``; a user with many rows runs a ``Pipeline``,
which asks the LLM from the executor's event loop, through a worker thread. This measures that
path against the same work done other ways, in one process, on the same bundled
SmolLM2-135M-Instruct with the same load options (``n_ctx``, ``n_batch`` from the plugin,
``n_threads=2`` on every side):

* **plain**: ``Llama(**options)`` and ``create_chat_completion`` for each chat, one after another;
* **plain+reset**: the same with ``llama.reset()`` before each completion, so that every prompt is
  evaluated whole, as the plugin's decoder does (an answer never depends on the call before; see
  the plugin's README). It tells the cost of that guarantee apart from the cost of taskloom;
* **process**: ``get_task("text-generation", llm=get_llm("llamacpp", ...)).process(rows)``;
* **pipeline**: ``Pipeline(task, source=rows).run(output=<fresh folder>, use_cache=False, progress=None)``;
* **server x1**, **server x8**: the same pipeline on ``get_llm("llamacpp-server", parallel=1 | 8)``,
  the same model served by the plugin's managed ``llama-server`` child (a newer llama.cpp, built
  once). Run only when the binary is already built or named by ``$TASKLOOM_LLAMA_SERVER``
  (``python scripts/llama_server.py build`` builds it); ``--no-server`` leaves them out.

The in-process sides use the plugin's default ``parallel`` (4 answers decoded together).

The workload is fixed so that figures compare across runs and machines: 32 different short
instructions, up to 64 new tokens each, temperature 0 and a fixed seed. Tokens per second is
completion tokens over the wall time of the generation call (the loop, ``process``, ``run``).
Loading is left out of all sides alike: each loads once before the rounds, and a second LLM
instance holds the taskloom model so that the pipeline's ``unload()`` at the end of a run does not
make the next round load it again; load times are printed apart. Rounds alternate, the order
rotating each round; the median of ``--repeat`` rounds counts (target: pipeline at least 0.95x
plain; for the default local model, batched: server x8 at least 1.4x plain). Greedy decoding
makes every in-process side write the same tokens, and the texts are compared, so a figure never
comes from different work; the server's build writes other texts than the library's, so its two
sides are compared with each other (the same texts at 1 and 8 slots).

The plain loops run on the plugin's llama.cpp thread (``on_llama_thread``), not on the main
thread. llama-cpp-python computes with OpenMP, and libgomp keeps a team of helper threads per
thread that starts computations; with two such threads in a 2-core process (the main thread's
and the plugin's) libgomp throttles its spinning and both sides lose about 40%. Calls from
several threads are also what made the pipeline slow before: it asked llama.cpp from whichever
of asyncio's executor threads was free (about half the plain loop's tokens per second on 2
cores). The calls are the plain ``Llama`` calls all the same; only the thread they run on is
shared.

Also per side: CPU time per token (user + system, all threads; for the server sides, the
server's own CPU from ``/proc`` as well), and once the process's peak resident memory (both
models loaded) and the servers'.

    .venv/bin/python bench/llamacpp_pipeline.py [--prompts 32] [--max-new-tokens 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.95
BATCHED_TARGET_RATIO = 1.4
THREADS = 2
"""llama.cpp threads on every side (``n_threads``), whatever the machine has."""
SEED = 42
LIBRARY_SIDES = ("plain", "plain+reset", "process", "pipeline")
SERVER_SIDES = ("server x1", "server x8")
PROMPTS = [
    "What's the capital of Spain?",
    "Write a short poem about autumn leaves.",
    "Explain what a prime number is to a child.",
    "Give three tips for writing clear emails.",
    "Describe the water cycle in a few sentences.",
    "What are the benefits of regular exercise?",
    "Summarise the plot of a detective story you invent.",
    "How do bees make honey?",
    "List some uses of a paperclip.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot and say why.",
    "What should I pack for a weekend hike?",
    "How does a rainbow form?",
    "Give a recipe idea for a quick breakfast.",
    "What is the difference between weather and climate?",
    "Write a haiku about the sea.",
    "Why do cats purr?",
    "Explain gravity in one paragraph.",
    "What are good habits for a restful sleep?",
    "Describe a sunset to someone who has never seen one.",
    "How do plants make their food?",
    "Name three famous painters and one work by each.",
    "What makes a good friend?",
    "Give advice to someone learning to cook.",
    "Why do leaves change colour in autumn?",
    "Explain what a computer program is.",
    "Write a two-line story about a lost key.",
    "What is the tallest mountain in the world?",
    "How do airplanes stay in the air?",
    "Suggest three hobbies for a rainy day.",
    "What is photosynthesis?",
    "Describe your ideal city park.",
]

Round = tuple[float, float, int, list[str]]
"""One side's round: wall seconds, process CPU seconds, completion tokens, the texts in input order."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of the server children so far (``/proc/<pid>/stat``, Linux)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _server_rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak = next((line for line in status.splitlines() if line.startswith("VmHWM:")), "VmHWM: 0 kB")
        total += int(peak.split()[1]) / 1024
    return total


def _timed(work: Callable[[], tuple[int, list[str]]], pids: list[int]) -> Round:
    """Run ``work`` once: wall and CPU seconds around it (ours and the servers'), with what it returned."""
    cpu, start = _cpu_s() + _server_cpu_s(pids), time.perf_counter()
    tokens, texts = work()
    return time.perf_counter() - start, _cpu_s() + _server_cpu_s(pids) - cpu, tokens, texts


def _plain(llama: Any, prompts: list[str], max_new_tokens: int, reset: bool) -> tuple[int, list[str]]:
    """The baseline loop, on the plugin's llama.cpp thread (see the module's docstring for why)."""

    def loop() -> tuple[int, list[str]]:
        tokens, texts = 0, []
        for prompt in prompts:
            if reset:
                llama.reset()
            out = llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], max_tokens=max_new_tokens, temperature=0.0, seed=SEED
            )
            tokens += out["usage"]["completion_tokens"]
            texts.append(out["choices"][0]["message"]["content"])
        return tokens, texts

    return _on_llama_thread(loop)


def _on_llama_thread(work: Callable[[], tuple[int, list[str]]]) -> tuple[int, list[str]]:
    try:
        from taskloom_llamacpp.models import on_llama_thread
    except ImportError:  # a plugin from before it computed on the caller's thread: so does the baseline
        return work()
    return on_llama_thread(work)


def _from_rows(rows: list[dict[str, Any]]) -> tuple[int, list[str]]:
    tokens = sum(row["distilabel_metadata"]["statistics_text-generation"]["output_tokens"] for row in rows)
    return tokens, [row["generation"] for row in rows]


def _process(task: Any, prompts: list[str]) -> tuple[int, list[str]]:
    return _from_rows(next(task.process([{"instruction": p} for p in prompts])))


def _pipeline(task: Any, prompts: list[str], output: Path) -> tuple[int, list[str]]:
    from taskloom import Pipeline

    pipeline = Pipeline(task, source=[{"instruction": p} for p in prompts], name="llamacpp-pipeline")
    result = pipeline.run(output=output, use_cache=False, progress=None)
    return _from_rows(list(result.rows()))


def _peak_rss_mb() -> float:
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1 << 20) if sys.platform == "darwin" else maxrss / 1024


def _server_available() -> bool:
    try:
        from taskloom_llamacpp.server import find_server
    except ImportError:  # a plugin from before the managed server
        return False
    return find_server() is not None


def measure(prompts: int = 32, max_new_tokens: int = 64, repeat: int = 3, server: bool = True) -> dict[str, Any]:
    """Every side in alternating rounds: medians of ``repeat`` rounds, and whether the texts agree."""
    from llama_cpp import Llama
    from taskloom_llamacpp import LlamaCppLLM

    from taskloom import get_llm, get_task

    server = server and _server_available()
    sides_measured = LIBRARY_SIDES + (SERVER_SIDES if server else ())

    chosen = (PROMPTS * (prompts // len(PROMPTS) + 1))[:prompts]
    options = LlamaCppLLM(n_threads=THREADS).load_options().llama_kwargs()
    start = time.perf_counter()
    llama = Llama(**options)  # the baseline's own copy, with exactly the plugin's options (loading computes nothing)
    plain_load_s = time.perf_counter() - start
    llm = get_llm(
        "llamacpp",
        n_threads=THREADS,
        generation_kwargs={"temperature": 0.0, "seed": SEED, "max_new_tokens": max_new_tokens},
    )
    task = get_task("text-generation", llm=llm)
    keeper = LlamaCppLLM(n_threads=THREADS)  # same load options: shares the model, keeps it loaded between runs
    start = time.perf_counter()
    keeper.load()
    taskloom_load_s = time.perf_counter() - start
    task.load()
    kwargs = {"temperature": 0.0, "seed": SEED, "max_new_tokens": max_new_tokens}
    served: dict[str, Any] = {}
    keepers: list[Any] = [keeper]
    pids: list[int] = []
    for side in SERVER_SIDES if server else ():
        slots = int(side.rsplit("x", 1)[1])
        served[side] = get_task(
            "text-generation",
            llm=get_llm("llamacpp-server", n_threads=THREADS, parallel=slots, generation_kwargs=kwargs),
        )
        holder = get_llm("llamacpp-server", n_threads=THREADS, parallel=slots)  # keeps its server up between runs
        holder.load()
        keepers.append(holder)
        pids.append(holder._holding.held.server.process.pid)
    rounds: dict[str, list[Round]] = {side: [] for side in sides_measured}
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-") as folder:
        runs = itertools.count()
        sides: dict[str, Callable[[list[str]], tuple[int, list[str]]]] = {
            "plain": lambda chats: _plain(llama, chats, max_new_tokens, reset=False),
            "plain+reset": lambda chats: _plain(llama, chats, max_new_tokens, reset=True),
            "process": lambda chats: _process(task, chats),
            "pipeline": lambda chats: _pipeline(task, chats, Path(folder) / f"run-{next(runs)}"),
        }
        for side, served_task in served.items():
            sides[side] = functools.partial(
                lambda t, chats: _pipeline(t, chats, Path(folder) / f"run-{next(runs)}"), served_task
            )
        try:
            for side in sides_measured:  # warm the page cache and every code path once
                sides[side](chosen[:1])
            for index in range(repeat):
                shift = index % len(sides_measured)  # no side always runs right after the same one
                order = sides_measured[shift:] + sides_measured[:shift]
                for side in order:
                    rounds[side].append(_timed(functools.partial(sides[side], chosen), pids))
            server_rss_mb = _server_rss_mb(pids)
        finally:
            task.unload()
            for holder in keepers:
                holder.unload()
            llama.close()

    def median(side: str, value: Callable[[Round], float]) -> float:
        return statistics.median(value(r) for r in rounds[side])

    tokens_per_s = {side: median(side, lambda r: r[2] / r[0]) for side in sides_measured}
    reference = rounds["plain"][0][3]
    batched = tokens_per_s["server x8"] / tokens_per_s["plain"] if server else None
    server_texts = [r[3] for side in SERVER_SIDES if server for r in rounds[side]]
    return {
        "sides": sides_measured,
        "prompts": len(chosen),
        "max_new_tokens": max_new_tokens,
        "threads": THREADS,
        "repeat": repeat,
        "tokens_per_s": tokens_per_s,
        "rounds_tokens_per_s": {side: [r[2] / r[0] for r in rounds[side]] for side in sides_measured},
        "tokens_per_round": {side: [r[2] for r in rounds[side]] for side in sides_measured},
        "cpu_ms_per_token": {side: median(side, lambda r: r[1] / r[2] * 1e3) for side in sides_measured},
        "ratio": tokens_per_s["pipeline"] / tokens_per_s["plain"],
        "process_ratio": tokens_per_s["process"] / tokens_per_s["plain"],
        "same_work_ratio": tokens_per_s["pipeline"] / tokens_per_s["plain+reset"],
        "target_ratio": TARGET_RATIO,
        "met": tokens_per_s["pipeline"] / tokens_per_s["plain"] >= TARGET_RATIO,
        "same_text": all(r[3] == reference for side in LIBRARY_SIDES for r in rounds[side]),
        "batched_ratio": batched,
        "batched_target_ratio": BATCHED_TARGET_RATIO,
        "batched_met": batched is not None and batched >= BATCHED_TARGET_RATIO,
        "server_same_text": all(texts == server_texts[0] for texts in server_texts) if server else None,
        "server_rss_mb": server_rss_mb,
        "load_s": {"plain": plain_load_s, "taskloom": taskloom_load_s},
        "peak_rss_mb": _peak_rss_mb(),
    }


def report(result: dict[str, Any]) -> None:
    """Print the sides side by side, their ratios to the plain loop, and the target."""
    print(
        f"llamacpp through a Pipeline, {result['prompts']} prompts x up to {result['max_new_tokens']} new tokens, "
        f"temperature 0, n_threads={result['threads']}, median of {result['repeat']} alternating rounds"
    )
    for side in result["sides"]:
        rates = ", ".join(f"{rate:.1f}" for rate in result["rounds_tokens_per_s"][side])
        ratio = result["tokens_per_s"][side] / result["tokens_per_s"]["plain"]
        print(
            f"  {side:11s} {result['tokens_per_s'][side]:7.1f} tokens/s {ratio:5.2f}x "
            f"({rates}), {result['cpu_ms_per_token'][side]:.2f} ms CPU/token"
        )
    status = "ok" if result["met"] else "MISSED"
    print(f"  pipeline/plain {result['ratio']:.3f}x (target >= {result['target_ratio']}x) {status}")
    print(f"  process/plain  {result['process_ratio']:.3f}x")
    print(
        f"  pipeline/(plain+reset) {result['same_work_ratio']:.3f}x: beside a loop that also "
        "evaluates every prompt whole, as the plugin does"
    )
    print(f"  same text on all sides: {result['same_text']} (tokens per round {result['tokens_per_round']['plain']})")
    if result["batched_ratio"] is None:
        print("  server x1/x8: not run (no llama-server built: python scripts/llama_server.py build)")
    else:
        status = "ok" if result["batched_met"] else "MISSED"
        print(
            f"  server x8/plain {result['batched_ratio']:.3f}x (target >= {result['batched_target_ratio']}x) {status}; "
            f"same text at 1 and 8 slots in every round: {result['server_same_text']}; "
            f"servers' peak RSS {result['server_rss_mb']:.0f} MB"
        )
    loads = result["load_s"]
    print(
        f"  model load, not in the figures: plain {loads['plain'] * 1e3:.0f} ms, "
        f"taskloom {loads['taskloom'] * 1e3:.0f} ms; process peak RSS {result['peak_rss_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-server", action="store_true", help="leave out the llamacpp-server sides")
    args = parser.parse_args()
    report(measure(args.prompts, args.max_new_tokens, args.repeat, server=not args.no_server))


if __name__ == "__main__":
    main()
