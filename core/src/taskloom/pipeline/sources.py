"""The built-in sources: rows in memory, JSONL, CSV, Parquet and Hugging Face datasets.

Every file source opens its file only when rows are asked for, so building a pipeline (or
loading one from a config) never touches the disk, and a missing file is reported when the
pipeline is checked, with the path in the message. Every source streams: rows are read a line
or a batch at a time, never the whole file at once, so the input can be larger than memory.

pyarrow and datasets are optional (``taskloom[parquet]``, ``taskloom[datasets]``) and imported
inside the methods that need them, so ``import taskloom`` stays fast without them.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from collections.abc import Iterator, Mapping
from os import PathLike
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import AliasChoices, Field, PrivateAttr, model_validator

from taskloom.component import RuntimeParameter
from taskloom.pipeline.base import Source, SourceError
from taskloom.typing import Row


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it.

    Going through ``importlib`` also keeps the untyped pyarrow and datasets out of mypy's sight:
    what comes back is a plain module whose attributes are ``Any``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        raise ImportError(
            f"{top} is needed here but is not installed: pip install 'taskloom[{extra}]' (or pip install {top})."
        ) from error


class _Lines:
    """The lines of a UTF-8 text file, numbered, so every error can name its line.

    The file is read as bytes and decoded a line at a time: a text-mode file decodes whole blocks
    ahead, so its decoding errors could not say which line is at fault. A byte-order mark at the
    start (spreadsheets write one) is dropped rather than becoming part of the first column name.
    Line endings are kept as written, which is what the csv module expects.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.number = 0

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as handle:
            for raw in handle:
                self.number += 1
                try:
                    line = raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise SourceError(
                        f"{self.path}, line {self.number}: not UTF-8 text ({error.reason}); save the file as UTF-8."
                    ) from None
                yield line


class FileSource(Source):
    """A source read from one path; shared checks and descriptions of the file sources."""

    path: RuntimeParameter[Path] = Field(description="The file to read.")

    def describe(self) -> str:
        return f"{self.type_name()} file {self.path}"

    def check(self) -> None:
        """Raise :class:`SourceError` now if the file is not there, instead of at the first row."""
        if not self.path.exists():
            raise SourceError(f"{self.describe()}: the path {self.path} does not exist.")
        if self.path.is_dir():
            raise SourceError(f"{self.describe()}: {self.path} is a directory, not a file.")


class RowsSource(Source):
    """Rows held in memory, for tests, notebooks and small inputs built in code."""

    registry_name = "rows"

    # The field cannot be called ``rows``: that is the method every source has. ``rows=`` is
    # accepted by the constructor all the same, since that is how one naturally writes it.
    data: list[Row] = Field(
        default_factory=list,
        validation_alias=AliasChoices("data", "rows"),
        description="The rows, in order.",
    )

    def rows(self) -> Iterator[Row]:
        # Copies, so a step that changes a row in place cannot change the source under a rerun.
        for row in self.data:
            yield dict(row)

    def describe(self) -> str:
        return f"{len(self.data)} row{'' if len(self.data) == 1 else 's'} in memory"

    def count(self) -> int:
        return len(self.data)


class JsonlSource(FileSource):
    """A JSON Lines file: one JSON object per line, read line by line; blank lines are skipped."""

    registry_name = "jsonl"

    def rows(self) -> Iterator[Row]:
        return self._rows(0)

    def rows_between(self, start: int, stop: int) -> Iterator[Row]:
        import itertools

        return itertools.islice(self._rows(start), stop - start)

    def _rows(self, skip: int) -> Iterator[Row]:
        """Every row after the first ``skip``, which are counted by their lines, not parsed."""
        self.check()
        lines = _Lines(self.path)
        for line in lines:
            number = lines.number
            if not line.strip():
                continue
            if skip:
                skip -= 1
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                hint = ""
                if number == 1 and line.lstrip().startswith("["):
                    hint = " It looks like one JSON array; JSON Lines needs one object per line."
                raise SourceError(
                    f"{self.path}, line {number}: not valid JSON ({error.msg}, column {error.colno}).{hint}"
                ) from None
            if not isinstance(row, dict):
                raise SourceError(
                    f"{self.path}, line {number}: expected a JSON object (one row), got {type(row).__name__}."
                )
            yield row


class CsvSource(FileSource):
    """A CSV file with a header line; every value is read as a string (an empty cell as ``""``)."""

    registry_name = "csv"

    delimiter: str = Field(default=",", min_length=1, max_length=1, description="The field separator.")

    def rows(self) -> Iterator[Row]:
        self.check()
        lines = _Lines(self.path)
        reader = csv.DictReader(lines, delimiter=self.delimiter)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                hint = ""
                if "field limit" in str(error):
                    hint = f" Raise the limit with csv.field_size_limit() (now {csv.field_size_limit()})."
                raise SourceError(f"{self.path}, line {lines.number}: {error}.{hint}") from None
            if None in row:
                # DictReader files surplus cells under the key None, which no step could name.
                raise SourceError(
                    f"{self.path}, line {lines.number}: more fields than the header's "
                    f"{len(reader.fieldnames or [])} columns."
                )
            yield dict(row)


class ParquetSource(FileSource):
    """A Parquet file, read one record batch at a time; its row count comes from the footer."""

    registry_name = "parquet"

    batch_size: RuntimeParameter[int] = Field(default=1024, gt=0, description="Rows read from the file at a time.")

    def _open(self) -> Any:
        self.check()
        parquet = import_optional("pyarrow.parquet", "parquet")
        try:
            return parquet.ParquetFile(self.path)
        except Exception as error:  # pyarrow's ArrowInvalid et al., without importing pyarrow.lib here
            raise SourceError(f"{self.describe()}: cannot be read as Parquet ({error}).") from error

    def rows(self) -> Iterator[Row]:
        file = self._open()
        try:
            for batch in file.iter_batches(batch_size=self.batch_size):
                yield from batch.to_pylist()
        finally:
            file.close()

    def count(self) -> int | None:
        if not self.path.is_file():
            return None  # unknown; rows() and check() say what is wrong
        file = self._open()
        try:
            return int(file.metadata.num_rows)
        finally:
            file.close()


class DatasetSource(Source):
    """A Hugging Face dataset: one on the Hub, one saved with ``save_to_disk``, or one in memory.

    A Hub dataset (``repo_id``) is downloaded once into the Hugging Face cache and read from
    there, memory-mapped; offline (``HF_HUB_OFFLINE=1``, or the Hub out of reach) it is read
    from that cache alone, so a pipeline that ran once online runs again on a plane. An
    in-memory dataset is not configuration (it is data), so it is left out of dumps: a pipeline
    config that needs to be loaded elsewhere should name a ``path`` or a ``repo_id`` instead.
    """

    registry_name = "hf-dataset"

    repo_id: RuntimeParameter[str | None] = Field(
        default=None, description="A dataset on the Hugging Face Hub, 'user/name'; from the local cache when offline."
    )
    config: RuntimeParameter[str | None] = Field(
        default=None, description="The Hub dataset's configuration (subset), when it has several."
    )
    revision: RuntimeParameter[str | None] = Field(
        default=None, description="A branch, tag or commit of the Hub dataset; None for main."
    )
    path: RuntimeParameter[Path | None] = Field(
        default=None, description="A folder written by Dataset.save_to_disk or DatasetDict.save_to_disk."
    )
    split: RuntimeParameter[str | None] = Field(
        default=None, description="The split to read from a DatasetDict; optional when it has one split only."
    )
    dataset: Any = Field(default=None, exclude=True, repr=False, description="A datasets.Dataset in memory.")
    _loaded: tuple[tuple[Any, ...], Any] | None = PrivateAttr(default=None)
    """The Hub dataset last loaded, and what it was loaded for: counting the rows and then
    reading them asks the Hub (or, offline, waits for its retries to give up) once."""

    @model_validator(mode="after")
    def _one_of_path_or_dataset(self) -> DatasetSource:
        given = [name for name in ("repo_id", "path", "dataset") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of repo_id (a Hub dataset), path (a dataset saved with save_to_disk) or "
                f"dataset (in memory); given: {', '.join(given) or 'none'}."
            )
        if self.dataset is not None and not _is_dataset(self.dataset):
            raise ValueError(f"dataset must be a datasets.Dataset or DatasetDict, not {type(self.dataset).__name__}.")
        if self.repo_id is None and (self.config is not None or self.revision is not None):
            raise ValueError("config and revision name a part of a Hub dataset: give repo_id too.")
        return self

    def describe(self) -> str:
        if self.repo_id is not None:
            where = self.repo_id + (f" (config {self.config!r})" if self.config else "")
            where += f" at {self.revision}" if self.revision else ""
        else:
            where = f"at {self.path}" if self.path is not None else "in memory"
        split = f" (split {self.split!r})" if self.split else ""
        return f"{self.type_name()} {where}{split}"

    def check(self) -> None:
        """Raise :class:`SourceError` now if the saved dataset's folder is not there."""
        if self.path is not None and not self.path.exists():
            raise SourceError(f"{self.describe()}: the path {self.path} does not exist.")

    def _dataset(self) -> Any:
        self.check()
        if self.repo_id is not None:
            wanted = (self.repo_id, self.config, self.revision, self.split)
            if self._loaded is None or self._loaded[0] != wanted:
                self._loaded = (wanted, self._from_hub())
            loaded = self._loaded[1]
        elif self.path is not None:
            loaded = self._from_disk()  # read anew each time: the folder may have been saved again
        else:
            loaded = self.dataset
        if isinstance(loaded, Mapping):  # a DatasetDict: pick the split
            splits = list(loaded)
            if self.split is None:
                if len(splits) != 1:
                    raise SourceError(f"{self.describe()} has the splits {splits}; choose one with split=...")
                return loaded[splits[0]]
            if self.split not in loaded:
                raise SourceError(f"{self.describe()}: no split {self.split!r}; the splits are {splits}.")
            return loaded[self.split]
        if self.split is not None:
            raise SourceError(f"{self.describe()}: split is set, but this is a single Dataset without splits.")
        return loaded

    def _from_disk(self) -> Any:
        datasets = import_optional("datasets", "datasets")
        try:
            return datasets.load_from_disk(str(self.path))
        except Exception as error:
            raise SourceError(f"{self.describe()}: cannot be loaded ({error}).") from error

    def _from_hub(self) -> Any:
        """The split asked for (else every split) of the Hub dataset, downloaded once, else read from the cache."""
        datasets = import_optional("datasets", "datasets")
        try:
            if self.split is not None:  # only that split's files are fetched
                return {
                    self.split: datasets.load_dataset(
                        self.repo_id, self.config, split=self.split, revision=self.revision
                    )
                }
            return datasets.load_dataset(self.repo_id, self.config, revision=self.revision)
        except Exception as error:
            from huggingface_hub import constants

            raise SourceError(
                f"{self.describe()}: cannot be read from the Hub nor from the local cache in "
                f"{constants.HF_HOME} ({type(error).__name__}: {error}). Online, check the name and your "
                "access (HF_TOKEN for a private or gated dataset); offline, read it once online first."
            ) from error

    def rows(self) -> Iterator[Row]:
        # A Dataset yields one dict per row, read from its memory-mapped Arrow data as it goes.
        for row in self._dataset():
            yield dict(row)

    def count(self) -> int | None:
        dataset = self._dataset()
        try:
            return len(dataset)
        except TypeError:  # an IterableDataset (streaming) has no length
            return None


def _is_dataset(obj: object) -> bool:
    """Whether ``obj`` is a datasets object, without importing datasets if nobody has yet."""
    if "datasets" not in sys.modules:
        return False
    datasets: Any = sys.modules["datasets"]
    kinds = tuple(
        getattr(datasets, name)
        for name in ("Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict")
        if hasattr(datasets, name)
    )
    return isinstance(obj, kinds)


SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""File suffix to source name, for :func:`source_for`; a folder is a saved Hugging Face dataset."""


def source_for(obj: Any) -> Source:
    """Turn what a user passed as a pipeline's input into a :class:`Source`.

    Accepts a source (returned as is), a list of dicts, a path (the suffix picks the format, a
    folder is a dataset saved with ``save_to_disk``) or a ``datasets.Dataset``. Any other input,
    or a path with an unknown suffix, is a :class:`SourceError` listing what is supported.
    """
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, str | PathLike):
        return _source_for_path(Path(obj))
    if isinstance(obj, list | tuple):
        rows = list(obj)
        bad = next((i for i, row in enumerate(rows) if not isinstance(row, Mapping)), None)
        if bad is not None:
            raise SourceError(
                f"A list of rows must hold dicts (column -> value); item {bad} is a {type(rows[bad]).__name__}."
            )
        return RowsSource(data=[dict(row) for row in rows])
    if _is_dataset(obj):
        return DatasetSource(dataset=obj)
    raise SourceError(
        f"Cannot read rows from a {type(obj).__name__}. Give a list of dicts, a path to a "
        f"{', '.join(sorted(set(SUFFIXES)))} file or a saved dataset folder, a datasets.Dataset, or a Source."
    )


def _source_for_path(path: Path) -> Source:
    if path.is_dir():
        return DatasetSource(path=path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        missing = "" if path.exists() else f" (and {path} does not exist)"
        raise SourceError(
            f"Cannot tell the format of {path} from its suffix {path.suffix or '(none)'!r}{missing}. "
            f"Supported: {', '.join(SUFFIXES)}, or a folder written by datasets' save_to_disk."
        )
    classes: dict[str, type[FileSource]] = {"jsonl": JsonlSource, "csv": CsvSource, "parquet": ParquetSource}
    return classes[kind](path=path)
