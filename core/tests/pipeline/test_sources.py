"""Sources: real files on disk, read lazily, with errors that name the file and the line."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from taskloom.component import Component
from taskloom.pipeline.base import Source, SourceError
from taskloom.pipeline.sources import (
    CsvSource,
    DatasetSource,
    JsonlSource,
    ParquetSource,
    RowsSource,
    source_for,
)
from taskloom.registry import get_source

ROWS = [{"instruction": "Say hi", "n": 1}, {"instruction": "Say bye", "n": 2}, {"instruction": "Ünïcode", "n": 3}]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def rebuilt(source: Component) -> Component:
    """A component built again from its dump, as loading a pipeline config does."""
    data = source.dump()
    assert data.pop("type") == type(source).registry_name
    return type(source)(**data)


# -- in memory ---------------------------------------------------------------------------------


def test_rows_source_yields_copies_and_counts() -> None:
    source = get_source("rows", rows=ROWS)
    assert isinstance(source, RowsSource)
    out = list(source.rows())
    assert out == ROWS
    out[0]["instruction"] = "changed"
    assert next(source.rows())["instruction"] == "Say hi"
    assert source.count() == 3
    assert source.describe() == "3 rows in memory"
    assert rebuilt(source) == source


def test_rows_source_without_rows_has_no_first_row() -> None:
    with pytest.raises(SourceError, match="0 rows in memory has no rows"):
        RowsSource().first_row()


# -- JSONL -------------------------------------------------------------------------------------


def test_jsonl_reads_rows_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": "ü"}\n', encoding="utf-8")
    source = get_source("jsonl", path=path)
    assert isinstance(source, JsonlSource)
    assert list(source.rows()) == [{"a": 1}, {"a": "ü"}]
    assert source.first_row() == {"a": 1}
    assert source.count() is None
    assert source.describe() == f"jsonl file {path}"


def test_jsonl_describe_shows_the_path_as_given() -> None:
    assert JsonlSource(path="data/in.jsonl").describe() == "jsonl file data/in.jsonl"  # type: ignore[arg-type]


def test_jsonl_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n', encoding="utf-8")
    rows = JsonlSource(path=path).rows()
    assert next(rows) == {"a": 1}
    with pytest.raises(SourceError, match=rf"{path.name}, line 3: not valid JSON"):
        next(rows)


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(SourceError, match=r"line 2: expected a JSON object \(one row\), got list"):
        list(JsonlSource(path=path).rows())


def test_jsonl_hint_for_a_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_text('[\n  {"a": 1}\n]\n', encoding="utf-8")
    with pytest.raises(SourceError, match="looks like one JSON array"):
        source_for(path).first_row()


def test_jsonl_reads_lazily(tmp_path: Path) -> None:
    # The broken last line is never reached when only the first rows are taken.
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\nnot json\n', encoding="utf-8")
    assert list(itertools.islice(JsonlSource(path=path).rows(), 2)) == [{"a": 1}, {"a": 2}]


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_reads_rows_with_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["instruction", "topic"])
        writer.writerow(["Say hi; twice", "greetings"])
        writer.writerow(["Multi\nline", ""])
    source = get_source("csv", path=path, delimiter=";")
    assert isinstance(source, CsvSource)
    assert list(source.rows()) == [
        {"instruction": "Say hi; twice", "topic": "greetings"},
        {"instruction": "Multi\nline", "topic": ""},
    ]
    assert source.describe() == f"csv file {path}"
    assert rebuilt(source) == source


def test_csv_strips_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffa,b\n1,2\n".encode())
    assert CsvSource(path=path).first_row() == {"a": "1", "b": "2"}


def test_csv_row_with_too_many_fields(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("a,b\n1,2\n1,2,3\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"line 3: more fields than the header's 2 columns"):
        list(CsvSource(path=path).rows())


def test_csv_field_past_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("a\nshort\n" + "x" * (csv.field_size_limit() + 1) + "\n", encoding="utf-8")
    rows = CsvSource(path=path).rows()
    assert next(rows) == {"a": "short"}
    with pytest.raises(SourceError, match=r"line 3: field larger than field limit.*csv\.field_size_limit"):
        next(rows)


@pytest.mark.parametrize(
    ("cls", "content", "line"),
    [(JsonlSource, b'{"a": 1}\n{"a": "caf\xe9"}\n', 2), (CsvSource, b"a\n1\ncaf\xe9\n", 3)],
)
def test_text_that_is_not_utf8_names_the_line(
    tmp_path: Path, cls: type[JsonlSource | CsvSource], content: bytes, line: int
) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(content)
    rows = cls(path=path).rows()
    assert next(rows) == ({"a": 1} if cls is JsonlSource else {"a": "1"})
    with pytest.raises(SourceError, match=rf"latin1\.txt, line {line}: not UTF-8 text"):
        next(rows)


def test_csv_header_only_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"^csv file .*header\.csv has no rows\.$"):
        CsvSource(path=path).first_row()


def test_csv_delimiter_is_one_character() -> None:
    with pytest.raises(ValueError, match="delimiter"):
        CsvSource(path=Path("x.csv"), delimiter=";;")


# -- Parquet -----------------------------------------------------------------------------------


def test_parquet_reads_rows_and_counts_from_metadata(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "in.parquet", ROWS)
    source = get_source("parquet", path=path, batch_size=2)
    assert isinstance(source, ParquetSource)
    assert list(source.rows()) == ROWS
    assert source.count() == 3
    assert source.describe() == f"parquet file {path}"
    assert rebuilt(source) == source


def test_parquet_streams_batch_by_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    rows = [{"i": i, "text": f"row {i}"} for i in range(1000)]
    path = write_parquet(tmp_path / "big.parquet", rows, row_group_size=100)
    pulled: list[int] = []
    sizes: list[int] = []
    original = pq.ParquetFile.iter_batches

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(kwargs["batch_size"])
        for batch in original(self, *args, **kwargs):
            pulled.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    taken = list(itertools.islice(ParquetSource(path=path, batch_size=2).rows(), 3))
    assert taken == rows[:3]
    assert sizes == [2]
    assert pulled == [2, 2]  # two batches of two rows, not the 1000-row file


def test_parquet_count_does_not_read_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    path = write_parquet(tmp_path / "in.parquet", ROWS)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("count() must come from the footer")

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", refuse)
    assert ParquetSource(path=path).count() == 3


def test_parquet_empty_file_has_no_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.string())}), path)
    source = ParquetSource(path=path)
    assert source.count() == 0
    with pytest.raises(SourceError, match=r"^parquet file .*empty\.parquet has no rows\.$"):
        source.first_row()


def test_parquet_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet", encoding="utf-8")
    with pytest.raises(SourceError, match="cannot be read as Parquet"):
        ParquetSource(path=path).first_row()


# -- Hugging Face datasets ---------------------------------------------------------------------


def test_dataset_from_disk(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    source = get_source("hf-dataset", path=tmp_path / "ds")
    assert isinstance(source, DatasetSource)
    assert list(source.rows()) == ROWS
    assert source.count() == 3
    assert source.describe() == f"hf-dataset at {tmp_path / 'ds'}"
    assert rebuilt(source) == source


def test_dataset_dict_split(tmp_path: Path) -> None:
    import datasets

    saved = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    )
    saved.save_to_disk(str(tmp_path / "dd"))
    assert list(DatasetSource(path=tmp_path / "dd", split="test").rows()) == ROWS[:1]
    assert DatasetSource(path=tmp_path / "dd", split="train").count() == 3
    with pytest.raises(SourceError, match="choose one with split"):
        DatasetSource(path=tmp_path / "dd").first_row()
    with pytest.raises(SourceError, match="no split 'dev'"):
        DatasetSource(path=tmp_path / "dd", split="dev").first_row()


def test_dataset_in_memory_is_left_out_of_dumps() -> None:
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    source = DatasetSource(dataset=dataset)
    assert list(source.rows()) == ROWS
    assert source.count() == 3
    assert source.describe() == "hf-dataset in memory"
    assert source.dump() == {
        "type": "hf-dataset",
        "repo_id": None,
        "config": None,
        "revision": None,
        "path": None,
        "split": None,
    }


def test_dataset_needs_path_or_dataset() -> None:
    with pytest.raises(ValueError, match="exactly one of repo_id"):
        DatasetSource()
    with pytest.raises(ValueError, match="given: repo_id, path"):
        DatasetSource(repo_id="alice/data", path="saved")
    with pytest.raises(ValueError, match="give repo_id too"):
        DatasetSource(path="saved", config="main")
    with pytest.raises(ValueError, match=r"must be a datasets\.Dataset"):
        DatasetSource(dataset=[{"a": 1}])


def test_empty_dataset_has_no_rows() -> None:
    import datasets

    with pytest.raises(SourceError, match="hf-dataset in memory has no rows"):
        DatasetSource(dataset=datasets.Dataset.from_dict({"a": []})).first_row()


# -- missing and empty files, for every file source --------------------------------------------


@pytest.mark.parametrize(
    ("name", "filename"),
    [("jsonl", "in.jsonl"), ("csv", "in.csv"), ("parquet", "in.parquet"), ("hf-dataset", "saved")],
)
def test_missing_path_is_reported_when_read(tmp_path: Path, name: str, filename: str) -> None:
    path = tmp_path / filename
    source = get_source(name, path=path)  # building it does not touch the disk
    expected = f"the path {path} does not exist"
    with pytest.raises(SourceError, match=expected):
        source.first_row()
    with pytest.raises(SourceError, match=expected):
        list(source.rows())
    with pytest.raises(SourceError, match=expected):
        source.check()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "filename"), [("jsonl", "in.jsonl"), ("csv", "in.csv")])
def test_empty_text_file_has_no_rows(tmp_path: Path, name: str, filename: str) -> None:
    path = tmp_path / filename
    path.write_text("\n" if name == "jsonl" else "", encoding="utf-8")
    source = get_source(name, path=path)
    with pytest.raises(SourceError, match=rf"^{name} file .*{filename} has no rows\.$"):
        source.first_row()


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is a directory, not a file"):
        JsonlSource(path=tmp_path).first_row()


def test_path_is_a_runtime_parameter(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", ROWS[:1])
    second = write_jsonl(tmp_path / "b.jsonl", ROWS[1:])
    source = JsonlSource(path=first)
    source.set_runtime_parameters({"path": str(second)})
    assert list(source.rows()) == ROWS[1:]


# -- source_for --------------------------------------------------------------------------------


def test_source_for_picks_by_type_and_suffix(tmp_path: Path) -> None:
    import datasets

    rows = RowsSource(rows=ROWS)
    assert source_for(rows) is rows
    made = source_for(ROWS)
    assert isinstance(made, RowsSource)
    assert list(made.rows()) == ROWS
    assert isinstance(source_for(str(tmp_path / "x.jsonl")), JsonlSource)
    assert isinstance(source_for(tmp_path / "x.ndjson"), JsonlSource)
    assert isinstance(source_for(tmp_path / "x.JSON"), JsonlSource)
    assert isinstance(source_for(tmp_path / "x.csv"), CsvSource)
    assert isinstance(source_for(tmp_path / "x.parquet"), ParquetSource)
    assert isinstance(source_for(tmp_path), DatasetSource)
    dataset = datasets.Dataset.from_list(ROWS)
    made = source_for(dataset)
    assert isinstance(made, DatasetSource)
    assert made.dataset is dataset


def test_source_for_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"suffix '\.txt'.*Supported: \.jsonl, .*\.csv, \.parquet"):
        source_for(tmp_path / "notes.txt")


def test_source_for_refuses_other_inputs() -> None:
    with pytest.raises(SourceError, match="item 1 is a str"):
        source_for([{"a": 1}, "b"])
    with pytest.raises(SourceError, match="Cannot read rows from a int"):
        source_for(42)


def test_every_source_is_a_source() -> None:
    for cls in (RowsSource, JsonlSource, CsvSource, ParquetSource, DatasetSource):
        assert issubclass(cls, Source)


def test_a_range_of_a_jsonl_file_is_the_same_rows_as_reading_it_all(tmp_path: Path) -> None:
    import itertools

    from taskloom.pipeline.sources import JsonlSource

    path = tmp_path / "in.jsonl"
    path.write_text("".join(f'{{"i": {i}}}\n' + ("\n" if i % 3 == 0 else "") for i in range(20)), encoding="utf-8")
    source = JsonlSource(path=str(path))
    for start, stop in [(0, 5), (4, 11), (18, 30), (25, 30)]:
        assert list(source.rows_between(start, stop)) == list(itertools.islice(source.rows(), start, stop))
