"""Side files: the rows a curation step leaves out, with why, so a person can look at them.

A filter or a deduplication that only counts what it dropped asks to be trusted; one that writes
each dropped row (and its reason, or the row it duplicated) lets its user check. The file is
JSON Lines, emptied when the step is loaded (a rerun writes it anew, as it writes its outputs),
appended to by the step's worker thread, and closed when the step is unloaded. A relative path
is relative to where the run is started.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO, Any


class SideFile:
    """A JSON Lines file of dropped rows: :meth:`open` empties it, :meth:`write` adds one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self.path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        if self._handle is None:
            self.open()
        with self._lock:
            assert self._handle is not None
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


__all__ = ["SideFile"]
