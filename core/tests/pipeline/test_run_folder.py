"""The run folder: resume only into one's own folder, refuse everything else without touching it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from taskloom._version import __version__
from taskloom.errors import TaskloomError
from taskloom.pipeline.run_folder import RunFolder, RunFolderError

SIGNATURE = {
    "name": "colours",
    "steps": [{"name": "load", "type": "load-data"}, {"name": "ask", "type": "text-generation"}],
    "edges": [["load", "ask"]],
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_claim_creates_run_json(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "out" / "run1", "colours", SIGNATURE)
    assert folder.claim() is False
    data = json.loads((tmp_path / "out" / "run1" / "run.json").read_text())
    assert data["pipeline"] == "colours"
    assert data["signature"] == SIGNATURE
    assert data["taskloom_version"] == __version__
    assert data["created"]
    assert folder.cache_path == tmp_path / "out" / "run1" / "cache.sqlite"
    assert folder.data_dir == tmp_path / "out" / "run1"
    assert sorted(p.name for p in folder.path.iterdir()) == ["run.json"]


def test_existing_empty_folder_is_claimed(tmp_path: Path) -> None:
    assert RunFolder(tmp_path, "colours", SIGNATURE).claim() is False


def test_same_pipeline_resumes(tmp_path: Path) -> None:
    assert RunFolder(tmp_path, "colours", SIGNATURE).claim() is False
    (tmp_path / "cache.sqlite").write_bytes(b"generations")
    before = _snapshot(tmp_path)
    # Tuples and lists, key order: the same structure is the same signature.
    again = {"edges": [("load", "ask")], "steps": SIGNATURE["steps"], "name": "colours"}
    assert RunFolder(tmp_path, "colours", again).claim() is True
    assert _snapshot(tmp_path) == before


def test_another_pipeline_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    RunFolder(tmp_path, "colours", SIGNATURE).claim()
    (tmp_path / "cache.sqlite").write_bytes(b"paid-for generations")
    (tmp_path / "ask.jsonl").write_text('{"colour": "red"}\n')
    before = _snapshot(tmp_path)
    with pytest.raises(RunFolderError) as raised:
        RunFolder(tmp_path, "shapes", {"name": "shapes", "steps": [], "edges": []}).claim()
    message = str(raised.value)
    assert str(tmp_path) in message
    assert "'colours'" in message
    assert "'shapes'" in message
    assert "--output" in message
    assert "delete" in message
    assert isinstance(raised.value, TaskloomError)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ask.jsonl", "cache.sqlite", "run.json"]


def test_same_name_other_structure_is_refused(tmp_path: Path) -> None:
    RunFolder(tmp_path, "colours", SIGNATURE).claim()
    changed = {**SIGNATURE, "edges": []}
    before = _snapshot(tmp_path)
    with pytest.raises(RunFolderError, match="steps or connections differ"):
        RunFolder(tmp_path, "colours", changed).claim()
    assert _snapshot(tmp_path) == before


def test_a_folder_of_the_users_own_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(RunFolderError, match=r"thesis\.tex"):
        RunFolder(tmp_path, "colours", SIGNATURE).claim()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        RunFolder(target, "colours", SIGNATURE).claim()
    assert target.read_text() == "x"


def test_unreadable_run_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="cannot be read"):
        RunFolder(tmp_path, "colours", SIGNATURE).claim()
    assert (tmp_path / "run.json").read_text() == "{not json"


def test_only_a_lock_file_is_not_foreign(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "colours", SIGNATURE)
    with folder.lock():
        assert folder.claim() is False
    assert folder.claim() is True


def test_signature_must_be_json() -> None:
    with pytest.raises(TypeError, match="plain JSON"):
        RunFolder("out", "colours", {"steps": object()})


def test_lock_is_exclusive_within_a_process(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "colours", SIGNATURE)
    folder.claim()
    with folder.lock(), pytest.raises(RunFolderError, match=f"pid {os.getpid()}"), folder.lock():
        pass
    with folder.lock():
        pass


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    RunFolder(tmp_path, "colours", SIGNATURE).claim()
    code = textwrap.dedent(
        f"""
        import sys
        from taskloom.pipeline.run_folder import RunFolder
        with RunFolder({str(tmp_path)!r}, "colours", {{}}).lock():
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        folder = RunFolder(tmp_path, "colours", SIGNATURE)
        with pytest.raises(RunFolderError) as raised, folder.lock():
            pass
        message = str(raised.value)
        assert "Another run is using" in message
        assert f"pid {holder.pid}" in message
        assert str(tmp_path) in message
    finally:
        # Killed, not asked: the kernel must release the lock of a process that dies abruptly.
        holder.kill()
        holder.wait(timeout=30)
    with RunFolder(tmp_path, "colours", SIGNATURE).lock():
        pass


def test_a_claim_lost_to_a_concurrent_run_of_another_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_link = os.link

    def racing_link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        # Another pipeline publishes its run.json between our check and our link.
        Path(dst).write_text(json.dumps({"pipeline": "shapes", "signature": {}}))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    with pytest.raises(RunFolderError, match="'shapes'"):
        RunFolder(tmp_path, "colours", SIGNATURE).claim()
    assert json.loads((tmp_path / "run.json").read_text())["pipeline"] == "shapes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_filesystem_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def no_link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    assert RunFolder(tmp_path, "colours", SIGNATURE).claim() is False
    assert json.loads((tmp_path / "run.json").read_text())["pipeline"] == "colours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    assert RunFolder(tmp_path, "colours", SIGNATURE).claim() is True
