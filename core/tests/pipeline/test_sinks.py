"""Sinks: what goes in comes back out, across chunks whose column types differ, and a crash leaves lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from taskloom.pipeline.sinks import PIECE_ROWS, DatasetSink, JsonlSink, ParquetSink
from taskloom.registry import get_sink

# Chunks as an LLM pipeline makes them: None before text, metadata dicts whose keys vary.
CHUNKS: list[list[dict[str, Any]]] = [
    [
        {"instruction": "a", "generation": None, "score": 1, "distilabel_metadata": {"raw_output_gen": None}},
        {"instruction": "b", "generation": None, "score": 2, "distilabel_metadata": {"raw_output_gen": None}},
    ],
    [
        {
            "instruction": "c",
            "generation": "Ünïcode ✓",
            "score": 2.5,
            "distilabel_metadata": {"raw_output_gen": "x", "raw_input_gen": [{"role": "user", "content": "c"}]},
        },
    ],
    [],
    [{"instruction": "d", "generation": "text", "score": None, "distilabel_metadata": {"raw_output_gen": "y"}}],
]
ROWS = [row for chunk in CHUNKS for row in chunk]


def filled(row: dict[str, Any]) -> dict[str, Any]:
    """The row as Arrow hands it back: metadata keys another row had are there, as None."""
    metadata = {"raw_output_gen": None, "raw_input_gen": None, **row["distilabel_metadata"]}
    return {**row, "distilabel_metadata": metadata}


def write_all(sink: Any, directory: Path, leaf: str, chunks: list[list[dict[str, Any]]]) -> None:
    writer = sink.open(directory, leaf)
    for chunk in chunks:
        writer.write(chunk)
    writer.close()


# -- JSONL -------------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path: Path) -> None:
    sink = get_sink("jsonl")
    assert isinstance(sink, JsonlSink)
    write_all(sink, tmp_path, "answer", [*CHUNKS, [{"when": Path("p")}]])
    path = sink.result()
    assert path == tmp_path / "answer.jsonl"
    text = path.read_text(encoding="utf-8")
    assert "Ünïcode ✓" in text  # ensure_ascii=False
    assert [json.loads(line) for line in text.splitlines()] == [*ROWS, {"when": "p"}]  # default=str


def test_jsonl_is_readable_after_each_flush_without_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = JsonlSink().open(tmp_path, "leaf")
    monkeypatch.setattr(writer, "flush_seconds", 0.0)  # write out at every chunk
    path = tmp_path / "leaf.jsonl"
    writer.write(CHUNKS[0])
    # Read by another handle, as after a killed process: only complete lines.
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    assert [json.loads(line) for line in lines] == CHUNKS[0]
    writer.write(CHUNKS[1])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    writer.close()


def test_jsonl_gathers_lines_between_flushes(tmp_path: Path) -> None:
    writer = JsonlSink().open(tmp_path, "leaf")
    path = tmp_path / "leaf.jsonl"
    writer.write(CHUNKS[0])
    assert path.read_text(encoding="utf-8") == "", "a chunk right after opening waits for more"
    writer.close()
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(CHUNKS[0])


def test_jsonl_open_truncates(tmp_path: Path) -> None:
    write_all(JsonlSink(), tmp_path, "leaf", [ROWS])
    write_all(JsonlSink(), tmp_path, "leaf", [ROWS[:1]])
    assert len((tmp_path / "leaf.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_jsonl_several_leaves_and_custom_filename(tmp_path: Path) -> None:
    sink = JsonlSink(filename="out/{leaf}.data.jsonl")
    write_all(sink, tmp_path, "a", [ROWS[:1]])
    write_all(sink, tmp_path, "b", [ROWS[1:2]])
    assert sink.result() == {"a": tmp_path / "out" / "a.data.jsonl", "b": tmp_path / "out" / "b.data.jsonl"}
    assert sink.dump() == {"type": "jsonl", "filename": "out/{leaf}.data.jsonl"}
    assert JsonlSink(**{k: v for k, v in sink.dump().items() if k != "type"}) == sink


def test_filename_without_leaf_refuses_a_second_leaf(tmp_path: Path) -> None:
    sink = JsonlSink(filename="all.jsonl")
    sink.open(tmp_path, "a").close()
    with pytest.raises(ValueError, match=r"would both write .*put \{leaf\} in filename"):
        sink.open(tmp_path, "b")


def test_filename_placeholders_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="only the placeholder"):
        JsonlSink(filename="{step}.jsonl")


def test_nothing_opened_means_no_result() -> None:
    assert JsonlSink().result() is None
    assert ParquetSink().result() is None
    assert DatasetSink().result() is None


# -- Parquet -----------------------------------------------------------------------------------


def test_parquet_round_trip_with_types_varying_by_chunk(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    sink = get_sink("parquet")
    assert isinstance(sink, ParquetSink)
    writer = sink.open(tmp_path, "judge")
    for chunk in CHUNKS:
        writer.write(chunk)
    assert not (tmp_path / "judge.parquet").exists()  # written at close, in one go
    writer.close()
    path = sink.result()
    assert path == tmp_path / "judge.parquet"
    table = pq.read_table(path)
    assert table.schema.field("generation").type == "string"
    assert table.schema.field("score").type == "double"
    assert table.to_pylist() == [filled(row) for row in ROWS]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge.parquet"]  # spool and tmp file are gone


def test_parquet_column_with_incompatible_types_becomes_text(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    rows = [{"x": 1, "e": {}}, {"x": "two", "e": {}}, {"x": [3], "e": {}}, {"x": None, "e": {}}]
    write_all(ParquetSink(), tmp_path, "leaf", [rows[:2], rows[2:]])
    assert pq.read_table(tmp_path / "leaf.parquet").to_pylist() == [
        {"x": "1", "e": "{}"},
        {"x": "two", "e": "{}"},
        {"x": "[3]", "e": "{}"},
        {"x": None, "e": "{}"},
    ]


def test_parquet_many_pieces_and_late_columns(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    count = PIECE_ROWS * 2 + 5
    # Types that change only from one conversion piece to the next: None, then text; int, then float;
    # metadata dicts that gain keys.
    rows: list[dict[str, Any]] = [
        {"i": i, "g": None, "n": 1, "m": {"a": 1}} if i < PIECE_ROWS else {"i": i, "g": "t", "n": 0.5, "m": {"b": "x"}}
        for i in range(count)
    ]
    rows[-1]["late"] = "only here"
    write_all(ParquetSink(), tmp_path, "leaf", [rows[i : i + 100] for i in range(0, count, 100)])
    back = pq.read_table(tmp_path / "leaf.parquet").to_pylist()
    assert len(back) == count
    assert back[0] == {"i": 0, "g": None, "n": 1.0, "m": {"a": 1, "b": None}, "late": None}
    assert back[-1] == {"i": count - 1, "g": "t", "n": 0.5, "m": {"a": None, "b": "x"}, "late": "only here"}


def test_parquet_failure_keeps_the_spooled_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from taskloom.pipeline import sinks

    def broken(spool: Path, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(sinks, "write_parquet", broken)
    writer = ParquetSink().open(tmp_path, "leaf")
    writer.write(ROWS)
    with pytest.raises(OSError, match="disk full") as caught:
        writer.close()
    spool = tmp_path / ".leaf.parquet.rows.jsonl"
    assert f"The rows are kept in {spool}." in caught.value.__notes__
    assert [json.loads(line) for line in spool.read_text(encoding="utf-8").splitlines()] == ROWS


def test_parquet_without_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    write_all(ParquetSink(), tmp_path, "leaf", [])
    assert pq.read_table(tmp_path / "leaf.parquet").num_rows == 0


def test_parquet_replaces_the_previous_file_atomically(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    write_all(ParquetSink(), tmp_path, "leaf", [ROWS])
    writer = ParquetSink().open(tmp_path, "leaf")
    writer.write(ROWS[:1])
    assert pq.read_table(tmp_path / "leaf.parquet").num_rows == len(ROWS)  # the old file until close
    writer.close()
    assert pq.read_table(tmp_path / "leaf.parquet").num_rows == 1


# -- Dataset -----------------------------------------------------------------------------------


def test_dataset_round_trip(tmp_path: Path) -> None:
    import datasets

    sink = get_sink("dataset")
    assert isinstance(sink, DatasetSink)
    write_all(sink, tmp_path, "answer", CHUNKS)
    dataset = sink.result()
    assert isinstance(dataset, datasets.Dataset)
    assert len(dataset) == len(ROWS)
    assert list(dataset) == [filled(row) for row in ROWS]
    assert (tmp_path / "answer.arrow").exists()


def test_dataset_several_leaves(tmp_path: Path) -> None:
    sink = DatasetSink()
    write_all(sink, tmp_path, "a", [ROWS[:1]])
    write_all(sink, tmp_path, "b", [[{"other": 1}, {"other": 2}]])
    made = sink.result()
    assert sorted(made) == ["a", "b"]
    assert list(made["b"]) == [{"other": 1}, {"other": 2}]
    assert made["a"][0]["instruction"] == "a"


def test_dataset_without_rows(tmp_path: Path) -> None:
    sink = DatasetSink()
    write_all(sink, tmp_path, "leaf", [[]])
    assert len(sink.result()) == 0
