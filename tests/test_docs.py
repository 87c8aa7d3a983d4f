"""The docs must not drift from the code: every hook is documented, every README example runs.

A hook without a reference section is a contract nobody can implement from the docs, and a
README example that no longer runs is the first thing a new user trips over.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskloom import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "hooks.md"
README = REPO / "README.md"

NO_TEST = "<!-- no-test -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def hook_specs() -> list[str]:
    """Names of the functions in taskloom.hookspecs that carry pluggy's spec marker."""
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(obj, marker))


def documented_hooks(text: str) -> set[str]:
    """Hooks with a ``## name`` (or ``## `name` ``) heading in the hooks reference."""
    return set(re.findall(r"^##[ \t]+`?(\w+)`?[ \t]*$", text, re.MULTILINE))


def python_examples(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each python block that uses taskloom and is not marked no-test."""
    examples = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        if "import taskloom" not in code and "from taskloom" not in code:
            continue
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == NO_TEST:
            continue
        examples.append((text.count("\n", 0, match.start()) + 1, code))
    return examples


def test_hookspecs_are_found() -> None:
    # Guards the test below against passing vacuously if the marker attribute ever changes.
    assert "register_llms" in hook_specs()
    assert "register_tasks" in hook_specs()


@pytest.mark.parametrize("hook", hook_specs())
def test_every_hook_spec_is_documented(hook: str) -> None:
    documented = documented_hooks(HOOKS_DOC.read_text(encoding="utf-8"))
    assert hook in documented, f"The hook spec {hook!r} has no '## {hook}' section in {HOOKS_DOC.relative_to(REPO)}."


def test_helpers_see_markers_and_headings() -> None:
    text = (
        "## `register_x`\n## register_y\n### register_z\n"
        "```python\nimport taskloom\n```\n"
        f"{NO_TEST}\n```python\nfrom taskloom import x\n```\n"
        "```python\nprint(1)\n```\n"
    )
    assert documented_hooks(text) == {"register_x", "register_y"}
    assert python_examples(text) == [(4, "import taskloom\n")]


README_EXAMPLES = python_examples(README.read_text(encoding="utf-8"))
# Pages whose every example is self-contained (scripted LLMs, no model to download).
RUNNABLE_PAGES = [REPO / "docs" / "tasks.md"]
PAGE_EXAMPLES = [
    (f"{page.relative_to(REPO)}:{line}", code)
    for page in RUNNABLE_PAGES
    for line, code in python_examples(page.read_text(encoding="utf-8"))
]


def test_readme_has_examples() -> None:
    assert README_EXAMPLES, "README.md has no runnable taskloom example"


@pytest.mark.parametrize(
    "code",
    [code for _, code in README_EXAMPLES] + [code for _, code in PAGE_EXAMPLES],
    ids=[f"README.md:{line}" for line, _ in README_EXAMPLES] + [where for where, _ in PAGE_EXAMPLES],
)
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
