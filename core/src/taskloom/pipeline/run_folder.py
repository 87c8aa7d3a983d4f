"""The run folder: where one pipeline's outputs and generation cache live, and who owns it.

A run's folder is also its memory: a rerun into the same folder resumes from the cache there. So
the folder must say which pipeline it belongs to, and a run of another pipeline (or a user's own
folder of files) must be refused before any LLM is called, with nothing in it changed: one mistyped
``--output`` must not mix two pipelines' outputs or overwrite a week of paid-for generations.

Ownership is ``run.json``, created once; its ownership fields never change. It records the
pipeline's name and its *signature* (step names, types and edges; not runtime parameters, which a
user may change between a run and its resume), and, under ``runs``, what each run into the folder
did: rows, requests, 429s, tokens, dollars and how it ended. A run adds its record by writing a
whole new file and renaming it into place while it holds the lock, so a reader never sees half a
file. A second process running the same pipeline into the same folder
is kept out by an OS lock on ``.lock``, which the kernel drops when its holder dies, even by
SIGKILL, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from taskloom.errors import TaskloomError
from taskloom.pipeline.cache import CACHE_FILENAME

RUN_FILENAME = "run.json"
LOCK_FILENAME = ".lock"
_TMP_PREFIX = ".run.json."
_IGNORED = frozenset({LOCK_FILENAME, ".DS_Store"})
"""Names that do not make a folder 'someone else's': our lock, and what a file browser drops."""


class RunFolderError(TaskloomError):
    """The output folder belongs to another pipeline or to the user, or another run is using it."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RunFolder:
    """The output directory of one pipeline's run.

    Call :meth:`claim` before anything else touches the folder, then hold :meth:`lock` for the
    whole run. Sinks write into :attr:`data_dir`; the generation cache is at :attr:`cache_path`.
    """

    def __init__(self, path: str | os.PathLike[str], pipeline_name: str, signature: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.pipeline_name = pipeline_name
        try:
            # Through JSON once, so tuples and lists compare equal to what run.json gives back.
            self.signature: dict[str, Any] = json.loads(_canonical(dict(signature)))
        except (TypeError, ValueError) as error:
            raise TypeError(f"A pipeline signature must be plain JSON data: {error}") from error

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILENAME

    @property
    def cache_path(self) -> Path:
        """Where the generation cache of this run lives."""
        return self.path / CACHE_FILENAME

    @property
    def data_dir(self) -> Path:
        """Where sinks write: the folder itself, so a user finds the outputs where they pointed."""
        return self.path

    # -- ownership -------------------------------------------------------------------------

    def claim(self) -> bool:
        """Make the folder this pipeline's; True if it already was (a resume), False if new.

        Raises :class:`RunFolderError`, leaving the folder as it was, when it holds another
        pipeline's run, a ``run.json`` that cannot be read, or files of the user's own.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(
                f"The output folder {str(self.path)!r} is a file, not a folder. Pick another --output folder."
            )
        if self.run_file.exists():
            self._check_owner()
            return True
        foreign = self._foreign_entries()
        if foreign:
            shown = ", ".join(sorted(foreign)[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunFolderError(
                f"The output folder {str(self.path)!r} already holds files that no taskloom run wrote "
                f"({shown}); taskloom will not write among them. Pick another --output folder, "
                "or empty that one."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        if self._create_run_file():
            return False
        # Another process running at the same moment created run.json first: it decides.
        self._check_owner()
        return True

    def _foreign_entries(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return [
            entry.name
            for entry in self.path.iterdir()
            if entry.name not in _IGNORED and not entry.name.startswith(_TMP_PREFIX)
        ]

    def _create_run_file(self) -> bool:
        """Write run.json completely, then publish it only if none exists: False if one did.

        The content goes to a temporary file first and is hard-linked into place, which fails
        rather than replaces when run.json exists; so a reader never sees half a file and two
        runs starting together cannot overwrite each other's claim.
        """
        from taskloom._version import __version__

        content = {
            "pipeline": self.pipeline_name,
            "signature": self.signature,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "taskloom_version": __version__,
        }
        tmp = self.path / f"{_TMP_PREFIX}{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(content, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.run_file)
            except FileExistsError:
                return False
            except OSError as error:
                # A filesystem without hard links: a plain rename, still atomic, just not exclusive.
                if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                    raise
                if self.run_file.exists():
                    return False
                os.replace(tmp, self.run_file)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def owner(self) -> dict[str, Any] | None:
        """The content of run.json, or None if the folder is not claimed yet."""
        try:
            text = self.run_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError as error:
            raise RunFolderError(
                f"The output folder {str(self.path)!r} has a {RUN_FILENAME} that cannot be read ({error}), so "
                "it is unclear which pipeline it belongs to. Pick another --output folder, or delete that one."
            ) from error
        if not isinstance(data, dict):
            raise RunFolderError(
                f"The output folder {str(self.path)!r} has a {RUN_FILENAME} that is not a JSON object. "
                "Pick another --output folder, or delete that one."
            )
        return data

    def record_run(self, record: Mapping[str, Any]) -> None:
        """Add one run's record to ``run.json`` (under ``runs``); call it while holding :meth:`lock`."""
        data = self.owner()
        if data is None:
            return
        runs = data.get("runs")
        data["runs"] = [*(runs if isinstance(runs, list) else []), dict(record)]
        tmp = self.path / f"{_TMP_PREFIX}{os.getpid()}.record.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, ensure_ascii=False, default=str)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.run_file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _check_owner(self) -> None:
        data = self.owner()
        if data is None:  # pragma: no cover - run.json vanished between two calls
            raise RunFolderError(f"{RUN_FILENAME} disappeared from {str(self.path)!r} while it was being read.")
        owner = data.get("pipeline")
        same_name = owner == self.pipeline_name
        if same_name and _canonical(data.get("signature")) == _canonical(self.signature):
            return
        if same_name:
            what = f"an earlier version of pipeline {owner!r} whose steps or connections differ from this one's"
        else:
            what = f"a run of pipeline {owner!r}"
        created = data.get("created")
        when = f" (started {created})" if created else ""
        raise RunFolderError(
            f"The output folder {str(self.path)!r} holds {what}{when}, so pipeline {self.pipeline_name!r} "
            "cannot use it: its cached generations and outputs belong to that run. Pick another --output "
            "folder, or delete that one to start over. Nothing in it was changed."
        )

    # -- exclusive use ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder for this process: :class:`RunFolderError` if another run holds it.

        The lock is ``flock`` on ``.lock``, released when the block ends or the process dies. The
        file itself stays: deleting it would let two processes lock two different files.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILENAME
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                raise RunFolderError(
                    f"Another run is using the output folder {str(self.path)!r} (pid {holder}). Wait for it "
                    "to finish or stop it, or pick another --output folder."
                ) from None
            # Who holds it, for the message above; written only once the lock is ours.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, pipeline={self.pipeline_name!r})"


__all__ = ["LOCK_FILENAME", "RUN_FILENAME", "RunFolder", "RunFolderError"]
