"""`make demo` as a new user runs it: no key, no config, the local default model end to end.

`taskloom run examples/quickstart.yaml`, in a fresh folder so out/ is made from scratch: each
instruction answered twice, rated by ultrafeedback, compared by pairwise-judge in both orders,
filtered, and formatted as DPO pairs, with a dataset card. The model's text (and so how many
rows survive) may change with the llama.cpp build, so the checks are on behaviour: every answer
and judgment is there and parsed, the DPO file is what the filter and the verdicts give from the
judged rows, and the summary and the card report the judges and the rows left out as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

pytest.importorskip("taskloom_llamacpp", reason="the demo runs on the local default model")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _is_message_list(value: Any, role: str) -> bool:
    """A conversational column as TRL reads it: a non-empty list of {"role", "content"} messages."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str) for m in value)
        and value[-1]["role"] == role
    )


def test_quickstart_answers_judges_and_ends_in_dpo_pairs_with_the_local_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKLOOM_DEFAULT_LLM", "TASKLOOM_CONFIG")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # no config file of the developer's
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "taskloom.cli", "run", str(EXAMPLES / "quickstart.yaml"), "--progress", "log"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    assert "judged: out/quickstart/judged.jsonl" in done.stdout
    assert "dpo: out/quickstart/dpo.jsonl" in done.stdout
    assert "could not parse" not in done.stderr
    folder = tmp_path / "out" / "quickstart"

    # Every instruction answered twice, and both judges' columns there and parsed.
    instructions = [row["instruction"] for row in _jsonl(EXAMPLES / "quickstart-instructions.jsonl")]
    judged = _jsonl(folder / "judged.jsonl")
    assert [row["instruction"] for row in judged] == instructions
    for row in judged:
        assert len(row["generations"]) == 2, row
        assert all(isinstance(answer, str) and answer.strip() for answer in row["generations"]), row
        assert len(row["ratings"]) == 2 and all(rating in {1, 2, 3, 4, 5} for rating in row["ratings"]), row
        assert len(row["rationales"]) == 2, row
        assert row["verdict"] in {"A", "B", "tie"}, row
        assert isinstance(row["orders_agree"], bool), row
        assert row["orders_agree"] or row["verdict"] == "tie", row  # a flipped verdict is a tie
    assert (folder / "judged.parquet").is_file()

    # The DPO file: non-empty, TRL's conversational preference shape, and exactly the pairs the
    # pipeline's rules give from the judged rows (keep: ratings | max >= 4; dpo: the verdict,
    # rows whose orders disagree left out).
    pairs = _jsonl(folder / "dpo.jsonl")
    assert pairs, "the demo must end in at least one preference pair"
    for pair in pairs:
        assert set(pair) == {"prompt", "chosen", "rejected"}, pair
        assert _is_message_list(pair["prompt"], "user"), pair
        assert _is_message_list(pair["chosen"], "assistant") and len(pair["chosen"]) == 1, pair
        assert _is_message_list(pair["rejected"], "assistant") and len(pair["rejected"]) == 1, pair
        assert pair["chosen"][0]["content"].strip() and pair["rejected"][0]["content"].strip()
    kept = [row for row in judged if max(row["ratings"]) >= 4]
    disagree = [row for row in kept if not row["orders_agree"]]
    expected = []
    for row in kept:
        if row["orders_agree"]:
            first, second = row["generations"]
            chosen, rejected = (first, second) if row["verdict"] == "A" else (second, first)
            expected.append((row["instruction"], chosen, rejected))
    made = [(p["prompt"][0]["content"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs]
    assert made == expected
    assert (folder / "dpo.parquet").is_file()

    # The run's record and summary: rows dropped per reason, as counted from the judged rows.
    [run] = json.loads((folder / "run.json").read_text())["runs"]
    steps = run["steps"]
    dropped = {name: steps[name].get("rows_dropped", {}) for name in ("keep", "dpo")}
    filtered_out = len(judged) - len(kept)
    assert dropped["keep"] == ({"ratings | max >= 4 is false": filtered_out} if filtered_out else {})
    assert dropped["dpo"] == ({"orders disagree": len(disagree)} if disagree else {})
    assert sum(sum(reasons.values()) for reasons in dropped.values()) > 0  # the weak judge costs rows
    for name, reasons in dropped.items():
        if reasons:
            listed = ", ".join(f"{reason}: {count}" for reason, count in sorted(reasons.items()))
            assert f"{name} dropped {sum(reasons.values())} rows ({listed})" in done.stdout
    flips = f"order flips {100 * sum(not row['orders_agree'] for row in judged) / len(judged):.0f}%"
    assert "rate (judge): " in done.stdout and f"{2 * len(judged)} judged items" in done.stdout
    assert "compare (judge): " in done.stdout and flips in done.stdout

    # The dataset card: the local model in the steps, the judge statistics, the rows left out.
    card = (folder / "README.md").read_text()
    assert "| answer | text-generation | SmolLM2-135M-Instruct.Q4_1 |" in card
    trust = card.split("## How far the judges can be trusted", 1)[1].split("\n## ", 1)[0]
    [rate_line] = [line for line in trust.splitlines() if line.startswith("- **rate**: ")]
    [compare_line] = [line for line in trust.splitlines() if line.startswith("- **compare**: ")]
    assert f"{2 * len(judged)} judged items, 0% unreadable" in rate_line and "; scores " in rate_line
    assert f"{len(judged)} judged items, 0% unreadable" in compare_line and flips in compare_line
    assert "## Rows left out" in card
    if disagree:
        assert f"- **dpo**: orders disagree: {len(disagree)}" in card
