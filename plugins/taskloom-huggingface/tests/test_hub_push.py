"""Pushing a run to the Hub: the real ``huggingface_hub`` client against a loopback stand-in.

There is no network here, and the Hub cannot be asked to refuse a token or fail a commit on
demand, so the stand-in (``hub_standin.py``) plays the Hub's HTTP API on 127.0.0.1 and the
client is pointed at it with ``endpoint=`` (``HF_ENDPOINT`` in a subprocess). Everything else is
real: the client's commit protocol, Parquet shards, the card, the CLI.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hub_standin import HubStandIn
from taskloom_huggingface.hub import HubError, push_run

from taskloom import Pipeline, get_sink, get_task
from taskloom.errors import BudgetExceededError
from taskloom.testing.scripted import ScriptedLLM

TOKEN = "hf_test_alice"
READ_TOKEN = "hf_test_reader"


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    users = {TOKEN: "alice", READ_TOKEN: "alice", "hf_test_bob": "bob"}
    with HubStandIn(users=users, read_only=[READ_TOKEN]) as server:
        yield server


@pytest.fixture(autouse=True)
def no_stored_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token a developer stored with `hf auth login`


def run_folder(path: Path, count: int = 4, sinks: tuple[str, ...] = ("jsonl", "parquet")) -> Path:
    rows = [{"instruction": f"Name prime number {i}."} for i in range(count)]
    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=[f"p{i}" for i in range(count)]))
    Pipeline(task, source=rows, sinks=[get_sink(kind) for kind in sinks], name="primes").run(output=path, progress=None)
    return path


def repo(hub: HubStandIn, name: str = "alice/primes") -> Any:
    return hub.repos[f"dataset/{name}"]


def parquet_rows(data: bytes) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return list(pq.read_table(io.BytesIO(data)).to_pylist())


def test_a_push_uploads_each_leaf_as_parquet_shards_and_the_card(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    result = push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    shard = "data/answer/train-00000-of-00001.parquet"
    assert result.uploaded == ["README.md", shard]
    assert result.commit is not None and result.url == f"{hub.url}/datasets/alice/primes"
    files = repo(hub).files
    assert [row["generation"] for row in parquet_rows(files[shard])] == ["p0", "p1", "p2", "p3"]
    card = files["README.md"].decode()
    assert "path: data/answer/train-*" in card and "answer.jsonl" not in card
    assert "# primes" in card and "| answer | text-generation |" in card  # the run's own card body
    assert not repo(hub).private


def test_pushing_again_uploads_only_what_changed(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    commits, uploads = len(hub.commits), len(hub.lfs_uploads)

    again = push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    assert again.commit is None and again.uploaded == []
    assert sorted(again.unchanged) == ["README.md", "data/answer/train-00000-of-00001.parquet"]
    assert (len(hub.commits), len(hub.lfs_uploads)) == (commits, uploads)
    assert "up to date" in again.line()

    run_folder(tmp_path / "run", count=6)  # the same pipeline, resumed with more rows
    grown = push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    assert grown.uploaded == ["README.md", "data/answer/train-00000-of-00001.parquet"]
    assert len(hub.commits) == commits + 1 and len(hub.lfs_uploads) == uploads + 1
    assert len(parquet_rows(repo(hub).files["data/answer/train-00000-of-00001.parquet"])) == 6


def test_a_push_without_a_token_fails_before_any_request(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    with pytest.raises(HubError, match=r"No Hugging Face token.*HF_TOKEN"):
        push_run(folder, "alice/primes", endpoint=hub.url)
    assert hub.requests == []


def test_a_refused_or_read_only_token_uploads_nothing(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    with pytest.raises(HubError, match="refused the token"):
        push_run(folder, "alice/primes", token="hf_not_a_token", endpoint=hub.url)
    with pytest.raises(HubError, match="read token"):
        push_run(folder, "alice/primes", token=READ_TOKEN, endpoint=hub.url)
    assert hub.repos == {} and hub.lfs_uploads == []


def test_a_repo_the_token_may_not_write_is_named_with_the_hubs_answer(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    with pytest.raises(HubError, match=r"'bob' may not create or write the dataset repo 'alice/primes'.*Hub said"):
        push_run(folder, "alice/primes", token="hf_test_bob", endpoint=hub.url)
    assert hub.repos == {} and hub.lfs_uploads == []


def test_pushing_into_someone_elses_existing_repo_is_refused_by_the_hub(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    before = dict(repo(hub).files)
    run_folder(tmp_path / "run", count=6)
    with pytest.raises(HubError, match=r"nothing was committed.*'bob' has no write access"):
        push_run(folder, "alice/primes", token="hf_test_bob", endpoint=hub.url)
    assert repo(hub).files == before


def test_a_failed_commit_leaves_the_repo_as_it_was(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    before = dict(repo(hub).files)
    run_folder(tmp_path / "run", count=6)
    hub.fail_next_commit = 500
    with pytest.raises(HubError, match="nothing was committed and the repo is as it was"):
        push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    assert repo(hub).files == before
    assert push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url).commit is not None  # the same push, again


def test_private_creates_a_private_repo_and_refuses_a_public_one(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    push_run(folder, "alice/secret", private=True, token=TOKEN, endpoint=hub.url)
    assert repo(hub, "alice/secret").private
    push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    with pytest.raises(HubError, match="exists and is public"):
        push_run(folder, "alice/primes", private=True, token=TOKEN, endpoint=hub.url)


def test_a_folder_without_a_card_is_refused_before_any_request(tmp_path: Path, hub: HubStandIn) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="no dataset card"):
        push_run(tmp_path / "empty", "alice/primes", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


def test_a_leaf_written_as_jsonl_only_is_converted(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run", sinks=("jsonl",))
    push_run(folder, "alice/primes", token=TOKEN, endpoint=hub.url)
    rows = parquet_rows(repo(hub).files["data/answer/train-00000-of-00001.parquet"])
    assert [row["instruction"] for row in rows] == [f"Name prime number {i}." for i in range(4)]


def test_the_hub_sink_pushes_once_the_run_completed(tmp_path: Path, hub: HubStandIn) -> None:
    rows = [{"instruction": f"q{i}"} for i in range(3)]
    sink = get_sink("hub", repo_id="alice/sunk", token=TOKEN, endpoint=hub.url)
    assert "token" not in sink.dump()  # a secret is never dumped
    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["a", "b", "c"]))
    result = Pipeline(task, source=rows, sinks=[get_sink("jsonl"), sink]).run(output=tmp_path / "run", progress=None)
    pushed = result.sinks["hub"]
    assert pushed.commit is not None
    assert len(parquet_rows(repo(hub, "alice/sunk").files["data/answer/train-00000-of-00001.parquet"])) == 3


def test_the_hub_sink_publishes_nothing_for_a_stopped_run(tmp_path: Path, hub: HubStandIn) -> None:
    rows = [{"instruction": f"q{i}"} for i in range(5)]
    sink = get_sink("hub", repo_id="alice/stopped", token=TOKEN, endpoint=hub.url)
    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["a"] * 5))
    with pytest.raises(BudgetExceededError):
        Pipeline(task, source=rows, sinks=[sink]).run(output=tmp_path / "run", progress=None, max_requests=2)
    assert hub.requests == []


def cli(
    args: list[str], hub: HubStandIn, tmp_path: Path, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "taskloom.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_taskloom_push_from_the_command_line(tmp_path: Path, hub: HubStandIn) -> None:
    folder = run_folder(tmp_path / "run")
    done = cli(["push", str(folder), "alice/primes", "--private"], hub, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pushed commit" in done.stdout and "uploaded  data/answer/train-00000-of-00001.parquet" in done.stdout
    assert repo(hub).private
    again = cli(["push", str(folder), "alice/primes"], hub, tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    refused = cli(["push", str(folder), "alice/primes"], hub, tmp_path, token="hf_test_bob")
    assert refused.returncode == 2
    assert "taskloom: error: 'bob' may not create or write" in refused.stderr
    assert "hf_test_bob" not in refused.stderr + refused.stdout  # the token is never printed


READ_BACK = """
import json, sys
from taskloom import get_source
source = get_source("hf-dataset", repo_id=sys.argv[1], **json.loads(sys.argv[2]))
print(json.dumps({"count": source.count(), "generations": [row["generation"] for row in source.rows()]}))
"""


def read_back(hub_env: dict[str, str], tmp_path: Path, repo_id: str, offline: bool = False, **fields: str) -> Any:
    """The hf-dataset source in a fresh process (the client reads HF_ENDPOINT when imported)."""
    import json

    env = {**os.environ, **hub_env, "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": TOKEN}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", READ_BACK, repo_id, json.dumps(fields)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr


def test_a_pushed_dataset_reads_back_with_datasets_then_offline_from_the_cache(tmp_path: Path) -> None:
    with HubStandIn(users={TOKEN: "alice"}) as hub:
        push_run(run_folder(tmp_path / "run"), "alice/primes", token=TOKEN, endpoint=hub.url)
        online = read_back(hub.env, tmp_path, "alice/primes", split="train", config="answer")
        assert online == (0, {"count": 4, "generations": ["p0", "p1", "p2", "p3"]})
        env = hub.env
    # The Hub is gone: with HF_HUB_OFFLINE=1 the rows come from the Hugging Face cache alone.
    offline = read_back(env, tmp_path, "alice/primes", offline=True, split="train")
    assert offline == (0, {"count": 4, "generations": ["p0", "p1", "p2", "p3"]})
    code, error = read_back(env, tmp_path, "alice/other", offline=True)
    assert code == 1 and "cannot be read from the Hub nor from the local cache" in error
