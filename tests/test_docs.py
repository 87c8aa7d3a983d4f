"""The docs must not drift from the code: every hook is documented, every Python example runs.

A hook without a reference section is a contract nobody can implement from the docs, and an
example that no longer runs is the first thing a new user trips over. So every ```python block
of the README, CONTRIBUTING.md and every page under docs/ is run, each on its own in a fresh
interpreter and an empty folder. A block that cannot run there (it needs a real API key or the
network) says so on the line before it, with its reason: ``<!-- not-run: needs an OpenAI key -->``.
The provider that opens the LLM plugin guide is the installed example package, byte for byte.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskloom import hookspecs

REPO = Path(__file__).resolve().parents[1]
HOOKS_DOC = REPO / "docs" / "hooks.md"
PLUGIN_GUIDE = REPO / "docs" / "writing-an-llm-plugin.md"
ACME = REPO / "examples" / "taskloom-acme-chat"
PAGES = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```(?P<lang>[\w+-]*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"^<!--\s*not-run:(?P<reason>.*?)-->$")
MARK = re.compile(r"^\s*<!--\s*(not-run|no-test)\b")  # a mark on a line of its own, not one quoted in prose


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts, its language, its code and any not-run reason."""

    line: int
    lang: str
    code: str
    not_run: str | None = None


def blocks(text: str) -> list[Block]:
    """Every fenced block of a page, in order, with the not-run reason written on the line before it."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        mark = NOT_RUN.match(before)
        found.append(
            Block(
                line=text.count("\n", 0, match.start()) + 1,
                lang=match.group("lang"),
                code=match.group("code"),
                not_run=mark.group("reason").strip() if mark else None,
            )
        )
    return found


def misplaced_marks(text: str) -> list[str]:
    """Marks that would silently do nothing: not directly before a python block, reasonless, or old."""
    wrong = []
    marked_lines = {b.line - 1 for b in blocks(text) if b.lang == "python" and b.not_run is not None}
    reasonless = {b.line - 1 for b in blocks(text) if b.not_run == ""}
    for number, line in enumerate(text.splitlines(), start=1):
        if not MARK.search(line):
            continue
        if "no-test" in line:
            wrong.append(f"line {number}: <!-- no-test --> is gone; write <!-- not-run: <reason> --> instead")
        elif number in reasonless:
            wrong.append(f"line {number}: a not-run mark needs its reason: <!-- not-run: needs an OpenAI key -->")
        elif number not in marked_lines:
            wrong.append(f"line {number}: a not-run mark must be alone on the line right before a ```python block")
    return wrong


def page_examples() -> list[tuple[str, Block]]:
    return [
        (f"{page.relative_to(REPO)}:{block.line}", block)
        for page in PAGES
        for block in blocks(page.read_text(encoding="utf-8"))
        if block.lang == "python"
    ]


EXAMPLES = page_examples()


def hook_specs() -> list[str]:
    """Names of the functions in taskloom.hookspecs that carry pluggy's spec marker."""
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(obj, marker))


def documented_hooks(text: str) -> set[str]:
    """Hooks with a ``## name`` (or ``## `name` ``) heading in the hooks reference."""
    return set(re.findall(r"^##[ \t]+`?(\w+)`?[ \t]*$", text, re.MULTILINE))


# -- the helpers themselves ---------------------------------------------------------------------------


def test_hookspecs_are_found() -> None:
    # Guards the test below against passing vacuously if the marker attribute ever changes.
    assert "register_llms" in hook_specs()
    assert "register_tasks" in hook_specs()


def test_helpers_see_marks_headings_and_languages() -> None:
    text = (
        "## `register_x`\n## register_y\n### register_z\n"
        "```python\nimport taskloom\n```\n"
        "<!-- not-run: needs an Acme key -->\n```python\nfrom taskloom import x\n```\n"
        "```toml\na = 1\n```\n"
        "```\nplain\n```\n"
    )
    assert documented_hooks(text) == {"register_x", "register_y"}
    assert blocks(text) == [
        Block(4, "python", "import taskloom\n"),
        Block(8, "python", "from taskloom import x\n", "needs an Acme key"),
        Block(11, "toml", "a = 1\n"),
        Block(14, "", "plain\n"),
    ]
    assert misplaced_marks(text) == []


def test_misplaced_marks_are_caught() -> None:
    text = (
        "<!-- not-run: no block follows -->\nprose\n"
        "<!-- not-run: -->\n```python\nx = 1\n```\n"
        "<!-- no-test -->\n```python\ny = 2\n```\n"
        "<!-- not-run: a shell block -->\n```sh\nls\n```\n"
        "Prose may quote `<!-- not-run: reason -->` freely.\n"
    )
    assert [w.split(":")[0] for w in misplaced_marks(text)] == ["line 1", "line 3", "line 7", "line 11"]


def test_pages_are_found() -> None:
    names = {str(page.relative_to(REPO)) for page in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "docs/writing-an-llm-plugin.md", "docs/hooks.md"} <= names
    assert len(EXAMPLES) > 40


# -- the docs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", hook_specs())
def test_every_hook_spec_is_documented(hook: str) -> None:
    documented = documented_hooks(HOOKS_DOC.read_text(encoding="utf-8"))
    assert hook in documented, f"The hook spec {hook!r} has no '## {hook}' section in {HOOKS_DOC.relative_to(REPO)}."


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_not_run_marks_are_well_formed(page: Path) -> None:
    assert misplaced_marks(page.read_text(encoding="utf-8")) == []


def example_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without taskloom settings or API keys, and no config file.

    So an example cannot pass on one machine because of a developer's key or default LLM: one
    that needs a key fails here until it is marked not-run.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TASKLOOM_") and not name.endswith(("_API_KEY", "_TOKEN"))
    }
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


def check_example(block: Block, folder: Path) -> None:
    """Run one block as a script in ``folder``; skip it if marked not-run, fail if it fails."""
    if block.not_run is not None:
        pytest.skip(f"not-run: {block.not_run}")
    script = folder / "example.py"
    script.write_text(block.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=folder,
        env=example_env(folder),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_a_failing_block_fails_unless_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="needs a key"):
        check_example(Block(1, "python", "raise SystemExit('needs a key')\n"), tmp_path)
    with pytest.raises(pytest.skip.Exception, match="not-run: needs a key"):
        check_example(Block(1, "python", "raise SystemExit(1)\n", "needs a key"), tmp_path)
    monkeypatch.setenv("ACME_API_KEY", "sk-live")  # a developer's key does not make a block pass
    with pytest.raises(AssertionError):
        check_example(Block(1, "python", "import os\nos.environ['ACME_API_KEY']\n"), tmp_path)


@pytest.mark.parametrize("block", [b for _, b in EXAMPLES], ids=[where for where, _ in EXAMPLES])
def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    check_example(block, tmp_path)


def test_plugin_guide_opens_with_the_example_package() -> None:
    page = blocks(PLUGIN_GUIDE.read_text(encoding="utf-8"))
    assert [b.lang for b in page[:2]] == ["python", "toml"], (
        "docs/writing-an-llm-plugin.md must open with the example provider's code, then its pyproject.toml"
    )
    python, toml = page[0].code, page[1].code
    assert python.encode() == (ACME / "taskloom_acme_chat.py").read_bytes(), (
        "the first python block of docs/writing-an-llm-plugin.md must be examples/taskloom-acme-chat/"
        "taskloom_acme_chat.py, byte for byte: copy the file into the page (or the page into the file)"
    )
    assert toml.encode() == (ACME / "pyproject.toml").read_bytes(), (
        "the toml block after it must be examples/taskloom-acme-chat/pyproject.toml"
    )
