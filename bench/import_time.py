"""Import cost of ``import taskloom``, against ``import pydantic`` measured in the same run.

Each measurement is a fresh interpreter timing its own import with ``perf_counter`` (interpreter
start-up is left out, and so is the noise of ``-X importtime``). The two imports are run
alternately so that a busy machine slows both alike; the median of each is compared.

Also checks that ``import taskloom`` leaves plugins, provider SDKs, pluggy and jinja2 unimported.

    .venv/bin/python bench/import_time.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from openai_throughput import compile_sources

TARGET_RATIO = 0.5
"""``import taskloom`` may take at most this many times as long as ``import pydantic``."""

NOT_ON_IMPORT = ("pluggy", "jinja2", "openai", "anthropic", "llama_cpp", "huggingface_hub")

# What is timed: the statement as a user writes it, in a fresh interpreter each time.
STATEMENTS = {
    "taskloom": "import taskloom",
    "pydantic": "import pydantic",
    # First real use, for information: taskloom's names load lazily, pydantic's too.
    "taskloom.Task": "from taskloom import Task",
    "pydantic.BaseModel": "from pydantic import BaseModel",
}

_TIMER = "import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"

# Run as `python -c _LEAK_PROBE <json list of top-level names>`.
_LEAK_PROBE = """
import json, sys
import taskloom
mods = sorted(sys.modules)
unwanted = set(json.loads(sys.argv[1]))
print(json.dumps({
    "plugins": [m for m in mods if m.startswith("taskloom_")],
    "heavy": [m for m in mods if m.split(".")[0] in unwanted],
}))
"""


def _time_once(statement: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _TIMER.format(stmt=statement)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def measure(runs: int = 15) -> dict[str, Any]:
    """Median import seconds per statement, the ratio, and the sys.modules check."""
    compile_sources()
    for statement in STATEMENTS.values():  # warm the .pyc files and the OS cache
        _time_once(statement)
    samples: dict[str, list[float]] = {key: [] for key in STATEMENTS}
    for _ in range(runs):
        for key, statement in STATEMENTS.items():
            samples[key].append(_time_once(statement))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    ratio = medians["taskloom"] / medians["pydantic"]

    probe = subprocess.run(
        [sys.executable, "-c", _LEAK_PROBE, json.dumps(NOT_ON_IMPORT)], capture_output=True, text=True, check=True
    ).stdout
    leaked = json.loads(probe)
    return {
        "runs": runs,
        "median_s": medians,
        "ratio": ratio,
        "first_use_ratio": medians["taskloom.Task"] / medians["pydantic.BaseModel"],
        "target_ratio": TARGET_RATIO,
        "ratio_met": ratio <= TARGET_RATIO,
        "leaked_plugins": leaked["plugins"],
        "leaked_modules": leaked["heavy"],
        "clean": not leaked["plugins"] and not leaked["heavy"],
    }


def report(result: dict[str, Any]) -> None:
    medians = result["median_s"]
    print(f"import time, median of {result['runs']} fresh interpreters each:")
    for key, statement in STATEMENTS.items():
        print(f"  {statement:<34} {medians[key] * 1e3:8.2f} ms")
    status = "met" if result["ratio_met"] else "MISSED"
    print(f"  ratio taskloom / pydantic: {result['ratio']:.2f}x (target <= {result['target_ratio']}x): {status}")
    print(f"  ratio on first use (Task / BaseModel), for information: {result['first_use_ratio']:.2f}x")
    if result["clean"]:
        print(f"  after `import taskloom`: no taskloom_* plugin module, none of {', '.join(NOT_ON_IMPORT)}")
    else:
        print("  MISSED: `import taskloom` imported " + ", ".join(result["leaked_plugins"] + result["leaked_modules"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per statement")
    args = parser.parse_args(argv)
    report(measure(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
