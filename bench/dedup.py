"""``deduplicate`` (MinHash LSH) against a plain ``datasketch`` script doing the same work: time and memory.

The step must cost no more than the few lines anyone would write with ``datasketch`` by hand,
and must stream: its memory grows with the signatures it keeps, not with the rows. So both run
over the same rows (100,000 of about 200 words, seeded, 5% of them planted near-duplicates: an
earlier row with one to five words replaced), from the same JSON Lines file, each in a fresh
interpreter, alternating, best of ``--repeat``:

* the step, driven as a pipeline drives a plain step: ``get_step("deduplicate", columns="text")``,
  ``load()``, then ``process([row])`` for each row (method minhash, default settings);
* the plain script: the same normalisation, word 3-gram shingles, CRC-32 shingle hash, 128
  permutations, seed and ``MinHashLSH(threshold=0.8, num_perm=128)``, in one loop, written with
  what datasketch's documentation advises: candidates confirmed with ``jaccard``, a
  ``LeanMinHash`` kept per kept row (in a dict), and one ``MinHash`` cleared for each row. (The step also shortens the
  index's band keys to 4 bytes, for memory, which costs it a hash a band; the plain script keeps
  datasketch's default keys.)
* for information, the step inside a whole ``Pipeline.run`` (``use_cache=False``) reading that
  file, which adds the source, the executor and the output file.

Timed: the work each side does for its rows (set-up, then each row's call, summed), not reading
and parsing the file, which both do alike; as CPU time, which other work on a shared machine
disturbs less than wall time (both sides are one thread; wall time is printed too). Targets: the
step's time at most 1.2x the plain script's, and a peak memory under 500 MB. The peak is the
child's ``VmHWM`` on Linux (``ru_maxrss`` also holds the parent's peak there, after vfork + exec;
see ``pipeline_throughput.py``), else its ``ru_maxrss``. Both sides must drop exactly the same
rows (they compute the same thing); their precision and recall against the planted duplicates
are printed too. For context, once, the script as datasketch's defaults would have it (SHA-1, a
new ``MinHash`` a row) on the first 10,000 rows.

    .venv/bin/python bench/dedup.py [--rows 100000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline_throughput import _PEAK

TARGET_RATIO = 1.2
TARGET_MEMORY_MB = 500.0
SEED = 11
DUPLICATE_SHARE = 0.05
DEFAULTS_ROWS = 10_000
"""Rows of the context run with datasketch's defaults (slower per row: the first ones are enough)."""


# argv: the rows file, the number of rows to read. Prints the timed work, the whole loop's time,
# the dropped rows' ids and the peak.
STEP_CHILD = (
    _PEAK
    + """\
import datasketch  # the step imports it on load(); the plain script's import is not timed either
from taskloom import get_step

path, limit = sys.argv[1], int(sys.argv[2])
step = get_step("deduplicate", columns="text")
began, cpu_began = time.perf_counter(), time.process_time()
step.load()
wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
process = step.process
dropped = []
with open(path, encoding="utf-8") as rows:
    for _, line in zip(range(limit), rows):
        row = json.loads(line)
        start, cpu_start = time.perf_counter(), time.process_time()
        kept = next(process([row]))
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
        if not kept:
            dropped.append(row["id"])
step.unload()
total = time.perf_counter() - began
print(json.dumps({"work_s": wall, "cpu_s": cpu, "total_s": total, "dropped": dropped, **peak()}))
"""
)

# The same work in plain datasketch. argv: the rows file, the number of rows, and "tuned" (what the
# step does) or "defaults" (SHA-1, and a new MinHash a row, as datasketch's README writes it).
PLAIN_CHILD = (
    _PEAK
    + """\
import sys, unicodedata, zlib
from datasketch import LeanMinHash, MinHash, MinHashLSH

path, limit, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
began, cpu_began = time.perf_counter(), time.process_time()
table = {c: " " for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("P")}


def shingles(text):
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().translate(table).split())
    words = text.encode().split(b" ")
    if len(words) <= 3:
        return {b" ".join(words)}
    return set(map(b" ".join, zip(words, words[1:], words[2:])))


lsh = MinHashLSH(threshold=0.8, num_perm=128)
minhash = MinHash(num_perm=128, seed=1, hashfunc=zlib.crc32)
kept = {}
dropped = []
wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
with open(path, encoding="utf-8") as rows:
    for _, line in zip(range(limit), rows):
        row = json.loads(line)
        start, cpu_start = time.perf_counter(), time.process_time()
        if how == "defaults":
            minhash = MinHash(num_perm=128, seed=1)
        else:
            minhash.clear()
        minhash.update_batch(shingles(row["text"]))
        duplicate = any(minhash.jaccard(kept[key]) >= 0.8 for key in sorted(lsh.query(minhash)))
        if duplicate:
            dropped.append(row["id"])
        else:
            lean = LeanMinHash(minhash)
            kept[row["id"]] = lean
            lsh.insert(row["id"], lean, check_duplication=False)
        wall, cpu = wall + time.perf_counter() - start, cpu + time.process_time() - cpu_start
total = time.perf_counter() - began
print(json.dumps({"work_s": wall, "cpu_s": cpu, "total_s": total, "dropped": dropped, **peak()}))
"""
)

# argv: the rows file, the number of rows in it, an output folder. The whole run is timed: the
# source, the executor, the step, the output file.
PIPELINE_CHILD = (
    _PEAK
    + """\
from taskloom import Pipeline, get_step

path, count, output = sys.argv[1], int(sys.argv[2]), sys.argv[3]
pipeline = Pipeline(get_step("deduplicate", columns="text"), source=path, name="dedup-bench")
began = time.perf_counter()
result = pipeline.run(output=output, use_cache=False, progress=None)
elapsed = time.perf_counter() - began
found = peak()
kept = {row["id"] for row in result.rows()}
dropped = sorted(set(range(count)) - kept)
counted = sum(result.stats.steps["deduplicate"].dropped.values())
print(json.dumps({"total_s": elapsed, "dropped": dropped, "counted": counted, **found}))
"""
)


def write_rows(path: Path, count: int, seed: int = SEED) -> dict[int, int]:
    """Seeded rows of about 200 words, in sentences, as JSON Lines; returns each planted copy's original.

    Words are drawn Zipf-like from 20,000 made-up ones, so common phrases recur across rows (as in
    real text, where they make the LSH index's buckets and candidates). A planted copy is an
    earlier original with one to five of its words replaced (Jaccard of word 3-grams about 0.86 to
    0.98). Originals are rebuilt from their own seed when copied, so nothing is held but the copies'
    sources.
    """
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(20_000)]
    cumulative: list[float] = []
    total = 0.0
    for rank in range(1, len(vocabulary) + 1):
        total += 1 / rank
        cumulative.append(total)

    def original(number: int) -> list[str]:
        own = random.Random(f"{seed}:{number}")
        words: list[str] = []
        while len(words) < own.randint(180, 220):
            sentence = own.choices(vocabulary, cum_weights=cumulative, k=own.randint(6, 20))
            sentence[0] = sentence[0].capitalize()
            if len(sentence) > 10 and own.random() < 0.5:
                sentence[len(sentence) // 2] += ","
            sentence[-1] += "."
            words.extend(sentence)
        return words

    copies: dict[int, int] = {}
    originals: list[int] = []
    with path.open("w", encoding="utf-8") as handle:
        for number in range(count):
            if originals and rng.random() < DUPLICATE_SHARE:
                source = rng.choice(originals)
                words = original(source)
                for _ in range(rng.randint(1, 5)):
                    words[rng.randrange(len(words))] = rng.choice(vocabulary)
                copies[number] = source
            else:
                words = original(number)
                originals.append(number)
            handle.write(json.dumps({"id": number, "text": " ".join(words)}) + "\n")
    return copies


def _child(script: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def measure(rows: int = 100_000, repeat: int = 2, pipeline: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="taskloom-bench-dedup-") as tmp:
        work = Path(tmp)
        data = work / "rows.jsonl"
        started = time.perf_counter()
        copies = write_rows(data, rows)
        generate_s = time.perf_counter() - started
        step_script, plain_script, pipeline_script = work / "step.py", work / "plain.py", work / "pipeline.py"
        step_script.write_text(STEP_CHILD)
        plain_script.write_text(PLAIN_CHILD)
        pipeline_script.write_text(PIPELINE_CHILD)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "step": []}
        for _ in range(repeat):
            runs["plain"].append(_child(plain_script, str(data), str(rows), "tuned"))
            runs["step"].append(_child(step_script, str(data), str(rows)))
        whole = _child(pipeline_script, str(data), str(rows), str(work / "out")) if pipeline else None
        head = min(rows, DEFAULTS_ROWS)
        defaults = _child(plain_script, str(data), str(head), "defaults")
        tuned_head = _child(plain_script, str(data), str(head), "tuned")
    elapsed = time.perf_counter() - started
    step_dropped = set(runs["step"][0]["dropped"])
    found = step_dropped & set(copies)
    cpu = {name: min(run["cpu_s"] for run in side) for name, side in runs.items()}
    wall = {name: min(run["work_s"] for run in side) for name, side in runs.items()}
    peak = {name: max(run["peak_mb"] for run in side) for name, side in runs.items()}
    result: dict[str, Any] = {
        "rows": rows,
        "repeat": repeat,
        "planted": len(copies),
        "generate_s": generate_s,
        "elapsed_s": elapsed,
        "cpu_us_per_row": {name: seconds / rows * 1e6 for name, seconds in cpu.items()},
        "wall_us_per_row": {name: seconds / rows * 1e6 for name, seconds in wall.items()},
        "ratio": cpu["step"] / cpu["plain"],
        "wall_ratio": wall["step"] / wall["plain"],
        "peak_mb": peak,
        "memory_measure": "VmHWM" if "hwm_mb" in runs["step"][0] else "ru_maxrss",
        "dropped": len(step_dropped),
        "same_rows": all(set(run["dropped"]) == step_dropped for side in runs.values() for run in side),
        "precision": len(found) / len(step_dropped) if step_dropped else 1.0,
        "recall": len(found) / len(copies) if copies else 1.0,
        "defaults_rows": head,
        "defaults_us_per_row": defaults["cpu_s"] / head * 1e6,
        "tuned_head_us_per_row": tuned_head["cpu_s"] / head * 1e6,
        "target_ratio": TARGET_RATIO,
        "target_memory_mb": TARGET_MEMORY_MB,
    }
    if whole is not None:
        result.update(
            pipeline_us_per_row=whole["total_s"] / rows * 1e6,
            pipeline_peak_mb=whole["peak_mb"],
            plain_total_us_per_row=min(run["total_s"] for run in runs["plain"]) / rows * 1e6,
            pipeline_same_rows=set(whole["dropped"]) == step_dropped and whole["counted"] == len(step_dropped),
        )
    result["ratio_met"] = result["ratio"] <= TARGET_RATIO
    result["memory_met"] = peak["step"] < TARGET_MEMORY_MB
    return result


def report(result: dict[str, Any]) -> None:
    def status(ok: bool) -> str:
        return "met" if ok else "MISSED"

    cpu, wall, peak = result["cpu_us_per_row"], result["wall_us_per_row"], result["peak_mb"]
    print(
        f"deduplicate (minhash, defaults), {result['rows']:,} rows of ~200 words, {result['planted']:,} planted "
        f"near-duplicates, a fresh interpreter a run, alternating, best of {result['repeat']}:"
    )
    for name, label in (("plain", "plain datasketch script"), ("step", "deduplicate step")):
        print(f"  {label:24} CPU {cpu[name]:6.1f} us/row   wall {wall[name]:6.1f} us/row   peak {peak[name]:6.1f} MB")
    print(
        f"  ratio step / plain, CPU time: {result['ratio']:.2f}x (target <= {TARGET_RATIO}x): "
        f"{status(result['ratio_met'])}; wall time {result['wall_ratio']:.2f}x"
    )
    print(
        f"  peak memory of the step's process: {peak['step']:.0f} MB (target < {TARGET_MEMORY_MB:.0f} MB, "
        f"{result['memory_measure']}): {status(result['memory_met'])}"
    )
    print(
        f"  dropped {result['dropped']:,} rows, the same rows in every run of both: "
        f"{'yes' if result['same_rows'] else 'NO'}; against the planted duplicates: precision "
        f"{result['precision']:.3f}, recall {result['recall']:.3f}"
    )
    if "pipeline_us_per_row" in result:
        same = "yes" if result["pipeline_same_rows"] else "NO"
        print(
            f"  a whole Pipeline.run from the file, once: {result['pipeline_us_per_row']:.1f} us/row wall, peak "
            f"{result['pipeline_peak_mb']:.1f} MB, the same rows dropped: {same} "
            f"(the plain script's loop with its reading: {result['plain_total_us_per_row']:.1f} us/row)"
        )
    print(
        f"  for context, datasketch's defaults (SHA-1, a new MinHash a row), first {result['defaults_rows']:,} "
        f"rows: CPU {result['defaults_us_per_row']:.1f} us/row against {result['tuned_head_us_per_row']:.1f} "
        "for the plain script above"
    )
    print(f"  (writing the rows took {result['generate_s']:.0f} s; the whole benchmark {result['elapsed_s']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-pipeline", action="store_true", help="leave out the whole-pipeline runs")
    args = parser.parse_args(argv)
    report(measure(args.rows, args.repeat, pipeline=not args.no_pipeline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
