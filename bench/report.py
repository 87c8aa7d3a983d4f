"""The report of a 100,000-row run: seconds, peak memory and page size of ``taskloom report``.

    .venv/bin/python bench/report.py [--rows 100000]

The run folder is written directly, in the shape a real run writes (a generating step with two
grouped generations, an UltraFeedback judge, a few failed and unreadable rows; ``run.json``
with the signature and one run record; a generation cache of three answers per row).
``taskloom report`` then runs in a fresh interpreter; its wall time and peak RSS are measured
from outside. The baseline, in the same way, is a fresh interpreter that only reads and parses
every line of the same JSONL, the least any report must do; the ratio compares the two.
Targets: at most 10 s, under 300 MB, under 10 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 10.0
TARGET_MB = 300.0
TARGET_HTML_MB = 10.0
TASKLOOM = Path(sys.executable).with_name("taskloom")


def _row(i: int, chooser: random.Random) -> dict[str, Any]:
    words = chooser.randint(20, 300)
    answers = [" ".join(["word"] * words), " ".join(["other"] * chooser.randint(20, 300))]
    failed = i % 50 == 7
    unreadable = i % 40 == 3 and not failed
    meta: dict[str, Any] = {
        "raw_output_answer": [None, None] if failed else answers,
        "raw_input_answer": [[{"role": "user", "content": f"Question {i}?"}]] * 2,
        "statistics_answer": [{"input_tokens": 3, "output_tokens": 0 if failed else len(a.split())} for a in answers],
        "raw_output_rate": None if failed else ("no ratings" if unreadable else "Rating: 4\nRating: 2"),
        "raw_input_rate": [{"role": "user", "content": f"Rate the answers to question {i}. " * 8}],
        "statistics_rate": {"input_tokens": 120, "output_tokens": 4},
    }
    if failed:
        meta["error_answer"] = [f"GenerationError: HTTP 500 for request id {i}"] * 2
        meta["error_rate"] = "task 'rate': every generation is None: there is nothing to rate"
    return {
        "instruction": f"Question {i}?",
        "distilabel_metadata": meta,
        "model_name": "gpt-4o-mini",
        "generations": None if failed else answers,
        "ratings": None if failed or unreadable else [chooser.randint(1, 5), chooser.randint(1, 5)],
        "rationales": None if failed or unreadable else [None, None],
    }


def build_folder(folder: Path, rows: int) -> int:
    """A run folder of ``rows`` rows; the JSONL's size in bytes."""
    chooser = random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "rate.jsonl").open("w", encoding="utf-8") as handle:
        for i in range(rows):
            handle.write(json.dumps(_row(i, chooser), ensure_ascii=False) + "\n")
    failed = len([i for i in range(rows) if i % 50 == 7])
    step = {"rows_in": rows, "rows_out": rows, "rows_failed": failed, "model": "gpt-4o-mini", "requests": rows}
    step.update(retries=12, rate_limited=3, cached=0, input_tokens=rows * 6, output_tokens=rows * 300)
    step.update(cost_usd=round(rows * 0.0002, 4), unpriced_requests=0, rows_stopped=0)
    judge = {
        "items": rows * 2,
        "judged": rows * 2 - 5000,
        "unreadable": 5000,
        "unreadable_rate": 0.025,
        "refused": 0,
        "refused_rate": 0.0,
        "failed_requests": failed,
        "distribution": {"1": rows // 3, "2": rows // 3, "3": rows // 3, "4": rows // 3, "5": rows // 3},
        "mean": 3.0,
        "score_length_spearman": 0.02,
        "rows_with_differing_scores": rows // 2,
        "first_scored_highest_rate": 0.5,
    }
    record = {
        "rows_read": rows,
        "rows_written": rows,
        "rows_total": rows,
        "elapsed_s": 1234.5,
        "stopped": None,
        "requests": rows * 2,
        "rate_limited": 3,
        "input_tokens": rows * 126,
        "output_tokens": rows * 304,
        "cost_usd": round(rows * 0.0004, 4),
        "steps": {
            "answer": {
                **step,
                "outputs": ["generation"],
                "started_s": 0.1,
                "active_s": 1230.0,
                "request_s": rows * 2.1,
            },
            "rate": {
                **step,
                "judge": judge,
                "outputs": ["ratings", "rationales"],
                "started_s": 2.5,
                "active_s": 1231.9,
                "request_s": rows * 1.4,
            },
        },
        "ended": "2026-12-03T00:00:00+00:00",
    }
    run = {
        "pipeline": "bench",
        "signature": {
            "name": "bench",
            "steps": [{"name": "answer", "type": "text-generation"}, {"name": "rate", "type": "ultrafeedback"}],
            "edges": [["answer", "rate"]],
        },
        "created": "2026-12-03T00:00:00+00:00",
        "taskloom_version": "0.1.0",
        "runs": [record],
    }
    (folder / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    _fill_cache(folder, rows * 3)  # two answers and a rating per row
    return (folder / "rate.jsonl").stat().st_size


def _fill_cache(folder: Path, generations: int) -> None:
    """The run's generation cache, which the report reads too: one entry per generation paid for."""
    from taskloom.pipeline.cache import CACHE_FILENAME, GenerationCache

    with GenerationCache(folder / CACHE_FILENAME) as cache:
        for start in range(0, generations, 10_000):
            cache.put_many((f"{i:064x}", "word " * 40, 120, 40) for i in range(start, min(start + 10_000, generations)))


_PLAIN = "import json, sys\nfor line in open(sys.argv[1], encoding='utf-8'):\n    json.loads(line)\n"


def _timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process, measured from outside."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{command} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def measure(rows: int = 100_000) -> dict[str, Any]:

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        size = build_folder(folder, rows)
        page = Path(tmp) / "report.html"
        seconds, peak = _timed([str(TASKLOOM), "report", str(folder), "-o", str(page)])
        plain_s, plain_mb = _timed([sys.executable, "-c", _PLAIN, str(folder / "rate.jsonl")])
        html_mb = page.stat().st_size / 1e6
    return {
        "rows": rows,
        "jsonl_mb": size / 1e6,
        "seconds": seconds,
        "peak_mb": peak,
        "html_mb": html_mb,
        "plain_s": plain_s,
        "plain_mb": plain_mb,
        "ratio": seconds / plain_s,
        "met": seconds <= TARGET_S and peak < TARGET_MB and html_mb < TARGET_HTML_MB,
    }


def report(results: dict[str, Any]) -> None:
    print(f"run report: {results['rows']:,} rows, {results['jsonl_mb']:.0f} MB of JSONL")
    print(
        f"  taskloom report    {results['seconds']:6.2f} s  peak {results['peak_mb']:6.1f} MB  "
        f"page {results['html_mb']:.2f} MB"
    )
    print(f"  parse every line   {results['plain_s']:6.2f} s  peak {results['plain_mb']:6.1f} MB")
    print(
        f"  report / parse: {results['ratio']:.2f}x; targets <= {TARGET_S:.0f} s, < {TARGET_MB:.0f} MB, "
        f"< {TARGET_HTML_MB:.0f} MB page  {'ok' if results['met'] else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    report(measure(parser.parse_args().rows))


if __name__ == "__main__":
    main()
