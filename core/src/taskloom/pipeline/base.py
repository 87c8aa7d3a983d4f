"""What a pipeline reads from and writes to: the Source and Sink contracts.

Both are components, so they are registered by name (plugins may add their own through the
``register_sources`` / ``register_sinks`` hooks), dumped into a pipeline's config and loaded
back. A source yields rows lazily and in a stable order, so a million-row file never has to fit
in memory and a resumed run sees the rows in the order the first one did. A sink receives the
finished rows of one leaf step in input order, a chunk at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from taskloom.component import Component
from taskloom.errors import TaskloomError
from taskloom.typing import Row


class SourceError(TaskloomError, ValueError):
    """A source cannot be read: a missing file, no rows, a malformed line (with its number)."""


class Source(Component, ABC):
    """Rows into a pipeline, read lazily and always in the same order."""

    @abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every row, in order; reading starts on the first ``next()``."""

    def describe(self) -> str:
        """One line for ``taskloom show``: what is read, from where."""
        return self.type_name()

    def first_row(self) -> Row:
        """The first row, to check columns before any LLM call; :class:`SourceError` if there is none."""
        for row in self.rows():
            return row
        raise SourceError(f"{self.describe()} has no rows.")

    def count(self) -> int | None:
        """How many rows there are, if known without reading them all (for progress)."""
        return None

    def rows_between(self, start: int, stop: int) -> Iterator[Row]:
        """Rows ``start`` to ``stop - 1``, what one shard of a run reads.

        By default the rows before ``start`` are read and dropped; a source that can skip them
        for less (a file whose rows need not be parsed to be counted) says how.
        """
        import itertools

        return itertools.islice(self.rows(), start, stop)


class SinkWriter(ABC):
    """An open sink: receives rows in input order, then is closed once."""

    @abstractmethod
    def write(self, rows: list[Row]) -> None:
        """Append rows (in input order) to what was written before."""

    @abstractmethod
    def close(self) -> None:
        """Finish (flush, write footers); called once, also after a failure."""


class Sink(Component, ABC):
    """Where the rows of a leaf step go: a file in the run's folder, or memory."""

    writes_files: ClassVar[bool] = False
    """Whether the sink writes one file per leaf step in the run folder (``result()`` gives it).

    An executor that splits the rows into shards writes such a sink once per shard, a part file
    each; a sink that does not (a ``datasets.Dataset``, an upload) is fed every row at the end.
    """

    @abstractmethod
    def open(self, directory: Path, leaf: str) -> SinkWriter:
        """Start writing the rows of leaf step ``leaf`` under ``directory`` (the run's output folder)."""

    def result(self) -> Any:
        """What ``run()`` hands back for this sink once closed (a path, a Dataset...); None for nothing."""
        return None

    def finish(self, directory: Path) -> None:
        """Publish what was written, once a run has completed and its dataset card is in ``directory``.

        Called only for a complete run (not one stopped by a budget, a signal or an error), after
        every writer is closed, so a sink that uploads (the Hub) never publishes a partial dataset.
        An error raised here is the run's error; the rows are already on disk.
        """
