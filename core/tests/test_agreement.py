"""Agreement of a judge with human labels: the metrics against hand-computed values, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from taskloom.agreement import AgreementError, agreement_in_run, measure_agreement

pytest.importorskip("scipy")


def test_labels_accuracy_and_kappa() -> None:
    judge = ["A", "A", "B", "B", "A", "tie", "A", "B"]
    human = ["A", "B", "B", "B", "A", "tie", "B", "B"]
    result = measure_agreement(judge, human)
    assert result["kind"] == "labels" and result["rows"] == 8
    assert result["accuracy"]["value"] == 0.75
    # observed 0.75; expected = P(A)P(A) + P(B)P(B) + P(tie)P(tie) = (4/8)(2/8) + (3/8)(5/8) + (1/8)(1/8)
    expected = 0.5 * 0.25 + 0.375 * 0.625 + 0.125 * 0.125
    assert result["cohen_kappa"]["value"] == pytest.approx((0.75 - expected) / (1 - expected), abs=1e-4)
    low, high = result["accuracy"]["ci95"]
    assert low <= 0.75 <= high


def test_scores_rank_correlations_with_a_confidence_interval() -> None:
    judge = [1, 2, 3, 4, 5, 5, 4, 3, 2, 1, None]
    human = [1, 2, 3, 4, 5, 4, 5, 2, 3, 1, 3]
    result = measure_agreement(judge, human)
    assert result["kind"] == "scores" and result["left_out"] == 1
    assert 0.8 < result["spearman"]["value"] <= 1 and 0.6 < result["kendall"]["value"] <= 1
    low, high = result["spearman"]["ci95"]
    assert low <= result["spearman"]["value"] <= high and high - low > 0  # ten rows: a wide interval


def test_too_few_rows_is_refused() -> None:
    with pytest.raises(AgreementError, match="at least 3"):
        measure_agreement([1, None, 2], [1, 2, None])


def test_the_cli_reads_a_run_folder(tmp_path: Path) -> None:
    rows = [{"verdict": v, "human": h} for v, h in zip("AABBA", "ABBBA", strict=True)]
    (tmp_path / "judge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert agreement_in_run(tmp_path, "verdict", "human")["accuracy"]["value"] == 0.8
    done = subprocess.run(
        [sys.executable, "-m", "taskloom.cli", "agreement", str(tmp_path), "--judge", "verdict", "--human", "human"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "accuracy" in done.stdout and "cohen_kappa" in done.stdout and "95% CI" in done.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "taskloom.cli", "agreement", str(tmp_path), "--judge", "nope", "--human", "human"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no column 'nope'" in missing.stderr
