"""A task package installed like any user would install it, resolved with no change to core.

A fresh virtualenv gets ``core`` and ``examples/taskloom-example-tasks`` from their paths (built
as wheels, not editable), then a script run by that virtualenv's interpreter finds the ``haiku``
task through the entry point and processes rows with it, and the installed ``taskloom`` command
lists the plugin and its tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"
EXAMPLE = REPO / "examples" / "taskloom-example-tasks"

POEM = "cold autumn evening\na crow settles on a branch\nthe light slips away"

# Runs inside the fresh virtualenv; prints one JSON object for the test to check.
SCRIPT = textwrap.dedent(
    """
    import json

    import taskloom
    import taskloom_example_tasks
    from taskloom import get_llm, get_task, list_plugins, list_tasks

    poem = {poem!r}
    llm = get_llm("scripted", replies=["  " + poem + "\\n", "just one line"])
    task = get_task("haiku", llm=llm)
    task.load()
    rows = next(task.process([{{"topic": "autumn"}}, {{"topic": "crows"}}]))
    task.unload()

    assert task.name == "haiku", task.name
    assert [row["topic"] for row in rows] == ["autumn", "crows"], rows
    assert rows[0]["haiku"] == poem, rows[0]
    assert rows[0]["model_name"] == "scripted", rows[0]
    assert rows[0]["distilabel_metadata"]["raw_output_haiku"] == "  " + poem + "\\n"
    # Not three lines: the output column is None and the paid-for text is kept.
    assert rows[1]["haiku"] is None, rows[1]
    assert rows[1]["distilabel_metadata"]["raw_output_haiku"] == "just one line"
    assert "haiku" in list_tasks() and "sentiment" in list_tasks()

    print(json.dumps({{
        "taskloom_file": taskloom.__file__,
        "example_file": taskloom_example_tasks.__file__,
        "task_class": type(task).__module__ + "." + type(task).__qualname__,
        "plugins": [
            {{"name": p.name, "package": p.package, "status": p.status, "error": p.error}}
            for p in list_plugins()
        ],
    }}))
    """
).format(poem=POEM)


def _run(args: list[str | Path], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"command failed ({result.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
    return result


@pytest.mark.slow
def test_example_task_package_resolves_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=60)
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    python = bindir / ("python.exe" if sys.platform == "win32" else "python")

    # From the paths, not editable: what gets imported is what the wheels contain.
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", CORE, EXAMPLE],
        cwd=tmp_path,
        timeout=240,
    )

    script = tmp_path / "check_haiku.py"
    script.write_text(SCRIPT)
    # cwd is tmp_path, so nothing from the repository checkout can shadow the installed packages.
    found = json.loads(_run([python, script], cwd=tmp_path, timeout=60).stdout)

    for key in ("taskloom_file", "example_file"):
        assert Path(found[key]).resolve().is_relative_to(venv.resolve()), found[key]
    assert found["task_class"] == "taskloom_example_tasks.haiku.HaikuTask"
    plugin = {p["name"]: p for p in found["plugins"]}["example-tasks"]
    assert plugin == {
        "name": "example-tasks",
        "package": "taskloom-example-tasks",
        "status": "loaded",
        "error": None,
    }

    # The console script of the installed core sees the plugin and what it registers.
    taskloom = bindir / ("taskloom.exe" if sys.platform == "win32" else "taskloom")
    listed = json.loads(_run([taskloom, "plugins", "--json"], cwd=tmp_path, timeout=60).stdout)
    ours = [p for p in listed if p["package"] == "taskloom-example-tasks"]
    assert len(ours) == 1, listed
    assert ours[0]["name"] == "example-tasks"
    assert ours[0]["status"] == "loaded", ours[0]
    assert {"task:haiku", "task:sentiment"} <= set(ours[0]["registered"]), ours[0]

    tasks = {t["name"]: t for t in json.loads(_run([taskloom, "tasks", "--json"], cwd=tmp_path, timeout=60).stdout)}
    assert tasks["haiku"]["package"] == "taskloom-example-tasks"
    assert tasks["haiku"]["inputs"] == {"topic": True}
    assert tasks["haiku"]["outputs"] == {"haiku": True, "model_name": True}

    # The package's own tests, run where it is installed: its conformance suites and the
    # taskloom pytest fixtures reach it through the installed core, as for any third party.
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pytest"], cwd=tmp_path, timeout=240
    )
    tests = Path(EXAMPLE) / "tests"
    result = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests], cwd=tmp_path, timeout=120)
    assert " passed" in result.stdout, result.stdout
    assert "failed" not in result.stdout and "error" not in result.stdout, result.stdout
