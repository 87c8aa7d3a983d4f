"""How well a judge agrees with people: the number to know before filtering a dataset by it.

Judge statistics (:mod:`taskloom.judging`) tell how a judge behaves; only human labels on the same
rows tell whether it is right. Given a judge's column and a human column, this measures:

* for verdicts and labels (strings, booleans): accuracy and Cohen's kappa (agreement beyond what
  chance would give with each side's own label frequencies);
* for scores (numbers): Spearman's and Kendall's rank correlations;

each with a bootstrap 95% confidence interval (rows resampled with replacement, a fixed seed), so
fifty labelled rows are not read as if they were five thousand. Rows where either side is
missing are left out and counted. numpy and scipy are an optional extra: ``taskloom[stats]``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from taskloom.errors import TaskloomError

BOOTSTRAP = 1000
SEED = 20241


class AgreementError(TaskloomError, ValueError):
    """Agreement cannot be measured as asked: no such column, too few labelled rows, numpy missing."""


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def measure_agreement(
    judge: Sequence[Any], human: Sequence[Any], *, bootstrap: int = BOOTSTRAP, seed: int = SEED
) -> dict[str, Any]:
    """Agreement of ``judge`` with ``human`` (paired by position); see the module docstring."""
    try:
        import numpy as np
        from scipy import stats
    except ImportError:
        raise AgreementError("Measuring agreement needs numpy and scipy: pip install 'taskloom[stats]'.") from None
    pairs = [(j, h) for j, h in zip(judge, human, strict=True) if j is not None and h is not None]
    left_out = len(judge) - len(pairs)
    if len(pairs) < 3:
        raise AgreementError(f"Agreement needs at least 3 rows where both columns have a value; found {len(pairs)}.")
    judged, labelled = [p[0] for p in pairs], [p[1] for p in pairs]
    kind = "scores" if _numeric(judged) and _numeric(labelled) else "labels"
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(pairs), size=(bootstrap, len(pairs)))

    if kind == "labels":
        judged_text, labelled_text = [str(v) for v in judged], [str(v) for v in labelled]
        codes = {label: index for index, label in enumerate(sorted(set(judged_text) | set(labelled_text)))}
        a = np.array([codes[v] for v in judged_text])
        b = np.array([codes[v] for v in labelled_text])

        def metrics(x: Any, y: Any) -> dict[str, float]:
            return {"accuracy": float(np.mean(x == y)), "cohen_kappa": _kappa(np, x, y, len(codes))}

    else:
        a = np.array(judged, dtype=float)
        b = np.array(labelled, dtype=float)

        def metrics(x: Any, y: Any) -> dict[str, float]:
            return {
                "spearman": float(stats.spearmanr(x, y).statistic),
                "kendall": float(stats.kendalltau(x, y).statistic),
            }

    point = metrics(a, b)
    with warnings.catch_warnings():  # a resample of one repeated value has no correlation: NaN, left out below
        warnings.simplefilter("ignore")
        resampled = [metrics(a[index], b[index]) for index in samples]
    result: dict[str, Any] = {"kind": kind, "rows": len(pairs), "left_out": left_out}
    for name, value in point.items():
        values = np.array([r[name] for r in resampled], dtype=float)
        values = values[~np.isnan(values)]
        low, high = np.percentile(values, [2.5, 97.5]) if values.size else (float("nan"), float("nan"))
        result[name] = {"value": round(value, 4), "ci95": [round(float(low), 4), round(float(high), 4)]}
    return result


def _kappa(np: Any, x: Any, y: Any, labels: int) -> float:
    observed = float(np.mean(x == y))
    expected = float(sum(np.mean(x == k) * np.mean(y == k) for k in range(labels)))
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def rows_of(run_dir: str | Path, leaf: str | None = None) -> tuple[str, Iterable[dict[str, Any]]]:
    """The output rows of a run folder's leaf step (the only one, unless ``leaf`` names it), or of a JSONL file."""
    folder = Path(run_dir)
    if folder.is_file():
        files = [folder]
    elif not folder.is_dir():
        raise AgreementError(f"No run folder or JSONL file at {folder}.")
    else:
        files = sorted(folder.glob("*.jsonl"))
    if leaf is not None and not folder.is_file():
        files = [f for f in files if f.stem == leaf]
    if len(files) != 1:
        found = ", ".join(f.stem for f in sorted(folder.glob("*.jsonl"))) or "none"
        raise AgreementError(f"Name the leaf step to read with --leaf; the JSONL outputs in {folder} are: {found}.")
    path = files[0]

    def read() -> Iterable[dict[str, Any]]:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    return path.stem, read()


def agreement_in_run(run_dir: str | Path, judge: str, human: str, leaf: str | None = None) -> dict[str, Any]:
    """Agreement between two columns of a run's output rows (a run folder, or a JSONL file)."""
    name, rows = rows_of(run_dir, leaf)
    judged: list[Any] = []
    labelled: list[Any] = []
    for row in rows:
        for column in (judge, human):
            if column not in row:
                raise AgreementError(f"The rows of {name!r} have no column {column!r}; they have: {', '.join(row)}.")
        judged.append(row[judge])
        labelled.append(row[human])
    return {"leaf": name, "judge": judge, "human": human, **measure_agreement(judged, labelled)}


__all__ = ["AgreementError", "agreement_in_run", "measure_agreement"]
