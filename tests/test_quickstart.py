"""`make demo` as a new user runs it: no key, no config, the local default model end to end.

`taskloom run examples/quickstart.yaml`: five instructions answered by text-generation with no
LLM named, then judged by structured-generation; every answer must be non-empty and every
rating must parse. Run in a fresh folder, so out/ is made from scratch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("taskloom_llamacpp", reason="the demo runs on the local default model")


def test_quickstart_generates_and_judges_with_the_local_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TASKLOOM_DEFAULT_LLM", "TASKLOOM_CONFIG")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # no config file of the developer's
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "taskloom.cli", "run", str(REPO / "examples" / "quickstart.yaml"), "--progress", "log"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "judge: out/quickstart/judge.jsonl" in done.stdout
    assert "could not parse" not in done.stderr
    assert (tmp_path / "out" / "quickstart" / "judge.parquet").is_file()

    rows = [json.loads(line) for line in (tmp_path / "out" / "quickstart" / "judge.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        metadata = row["distilabel_metadata"]
        assert not [key for key in metadata if key.startswith("error_")], metadata
        assert row["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
        assert isinstance(row["generation"], str)
        assert row["generation"].strip()
        assert row["rating"] in {1, 2, 3, 4, 5}, metadata["raw_output_judge"]
        assert row["reason"].strip()
        assert json.loads(metadata["raw_output_judge"])["rating"] == row["rating"]
        assert metadata["statistics_answer"]["output_tokens"] > 0
