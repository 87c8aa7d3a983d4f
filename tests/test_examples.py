"""Every example pipeline file checks out as `taskloom validate` checks it: fields, LLMs, source and columns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "sampler.yaml", "magpie.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_example_validates_and_shows_its_first_rows(path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("taskloom")), "validate", str(path), "--rows", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ": ok." in done.stdout and "first 2 source rows:" in done.stdout
