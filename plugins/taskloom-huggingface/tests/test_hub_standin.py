"""The Hub stand-in against the real ``huggingface_hub`` client: every call the push tests rely on.

The stand-in is only worth its answers if the real client accepts them, so nothing of the client
is mocked here: each test drives ``HfApi``, ``hf_hub_download``, ``snapshot_download`` or
``datasets`` against it over loopback and checks both what the client saw and what the server
stored. Git object ids are checked against ``git hash-object``, not against our own hashing.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import pytest
from hub_standin import HubStandIn, Repo
from huggingface_hub import (
    CommitOperation,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    RepoFile,
    RepoFolder,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

ALICE, READER, BOB, CAROL = "hf_test_alice", "hf_test_reader", "hf_test_bob", "hf_test_carol"
PARQUET_PATH = "data/answer/train-00000-of-00001.parquet"
CARD = textwrap.dedent(
    """\
    ---
    configs:
    - config_name: answer
      data_files:
      - split: train
        path: data/answer/train-*
    ---
    # primes
    """
).encode()


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    users = {ALICE: "alice", READER: "alice", BOB: "bob", CAROL: "carol"}
    with HubStandIn(users=users, orgs={"acme": ["carol"]}, read_only=[READER]) as server:
        yield server


@pytest.fixture(autouse=True)
def no_stored_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)  # every call below names its token, or token=False


def api(hub: HubStandIn, token: str | bool = ALICE) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def parquet(count: int = 3) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"generation": [f"p{i}" for i in range(count)]}), buffer)
    return buffer.getvalue()


def push(hub: HubStandIn, files: dict[str, bytes], repo_id: str = "alice/primes", token: str = ALICE) -> str:
    client = api(hub, token)
    client.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    operations = [CommitOperationAdd(path, data) for path, data in files.items()]
    return client.create_commit(repo_id, operations, commit_message="push", repo_type="dataset").oid


class Where(TypedDict):
    endpoint: str
    token: str | bool
    cache_dir: Path


def where(hub: HubStandIn, token: str | bool, cache: Path) -> Where:
    """Where a download goes: this server, as this token, into this cache."""
    return {"endpoint": hub.url, "token": token, "cache_dir": cache}


def dataset(hub: HubStandIn, name: str = "alice/primes") -> Repo:
    return hub.repos[f"dataset/{name}"]


def git_blob(data: bytes) -> str:
    """The blob id git itself gives ``data``: the oracle for the ids the stand-in lists."""
    git = shutil.which("git")
    assert git, "git is needed to check git object ids"
    done = subprocess.run([git, "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_whoami_names_the_tokens_user_its_role_and_orgs(hub: HubStandIn) -> None:
    me = api(hub).whoami()
    assert me["name"] == "alice" and me["auth"]["accessToken"]["role"] == "write"
    assert api(hub, READER).whoami()["auth"]["accessToken"]["role"] == "read"
    assert [org["name"] for org in api(hub, CAROL).whoami()["orgs"]] == ["acme"]


def test_an_unknown_token_is_refused_with_the_hubs_401(hub: HubStandIn) -> None:
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as whoami:
        api(hub, "hf_not_a_token").whoami()
    assert whoami.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as create:
        api(hub, "hf_not_a_token").create_repo("alice/primes", repo_type="dataset", exist_ok=True)
    assert create.value.response.status_code == 401
    assert create.value.server_message == "Invalid credentials in Authorization header"
    assert hub.repos == {}


def test_create_repo_makes_the_repo_once_and_409_says_it_exists(hub: HubStandIn) -> None:
    url = api(hub).create_repo("alice/primes", repo_type="dataset", private=True, exist_ok=True)
    assert url == f"{hub.url}/datasets/alice/primes" and url.repo_id == "alice/primes"
    api(hub).create_repo("alice/primes", repo_type="dataset", private=False, exist_ok=True)  # exists: unchanged
    with pytest.raises(HfHubHTTPError, match="already created this dataset repo") as again:
        api(hub).create_repo("alice/primes", repo_type="dataset")
    assert again.value.response.status_code == 409
    assert dataset(hub).private and list(dataset(hub).files) == [".gitattributes"]  # the Hub's initial commit
    info = api(hub).dataset_info("alice/primes")
    assert info.private is True and info.sha == dataset(hub).commit_shas[-1]
    assert api(hub).repo_info("alice/primes", repo_type="dataset").id == "alice/primes"
    assert api(hub).repo_exists("alice/primes", repo_type="dataset")
    assert not api(hub).repo_exists("alice/other", repo_type="dataset")


def test_a_read_token_reads_but_its_writes_are_refused_readably(hub: HubStandIn) -> None:
    push(hub, {"README.md": CARD})
    before, commits = dict(dataset(hub).files), len(hub.commits)
    reader = api(hub, READER)
    assert reader.dataset_info("alice/primes").sha == dataset(hub).commit_shas[-1]
    with pytest.raises(HfHubHTTPError, match="read token") as refused:
        reader.create_repo("alice/new", repo_type="dataset", exist_ok=True)
    assert refused.value.response.status_code == 403
    operations = [CommitOperationAdd("README.md", b"# changed\n"), CommitOperationAdd(PARQUET_PATH, parquet())]
    with pytest.raises(HfHubHTTPError, match="403 Forbidden: The token of 'alice' is a read token") as commit:
        reader.create_commit("alice/primes", operations, commit_message="no", repo_type="dataset")
    assert "read token" in (commit.value.server_message or "")
    assert (dataset(hub).files, len(hub.commits), hub.lfs_uploads) == (before, commits, [])
    assert "dataset/alice/new" not in hub.repos


def test_another_users_namespace_is_refused_and_nothing_changes(hub: HubStandIn) -> None:
    push(hub, {"README.md": CARD})
    before, shas = dict(dataset(hub).files), list(dataset(hub).commit_shas)
    with pytest.raises(HfHubHTTPError, match="rights to create a dataset under the namespace") as create:
        api(hub, BOB).create_repo("alice/bobs", repo_type="dataset", exist_ok=True)
    assert create.value.response.status_code == 403 and "dataset/alice/bobs" not in hub.repos
    # (no create_repo(exist_ok=True) for bob here: the Hub's 403 for an existing repo sends the client to
    # repo_info, after which it builds its RepoUrl without the endpoint and fails on a non-Hub host)
    operations = [CommitOperationAdd(PARQUET_PATH, parquet())]
    with pytest.raises(HfHubHTTPError, match="'bob' has no write access") as commit:
        api(hub, BOB).create_commit("alice/primes", operations, commit_message="no", repo_type="dataset")
    assert commit.value.response.status_code == 403
    assert (dataset(hub).files, dataset(hub).commit_shas, hub.lfs_uploads) == (before, shas, [])


def test_an_organization_takes_pushes_from_its_members_only(hub: HubStandIn) -> None:
    push(hub, {"README.md": CARD}, "acme/primes", token=CAROL)
    assert dataset(hub, "acme/primes").files["README.md"] == CARD
    with pytest.raises(HfHubHTTPError) as refused:
        api(hub, BOB).create_repo("acme/bobs", repo_type="dataset", exist_ok=True)
    assert refused.value.response.status_code == 403


def test_a_private_repo_is_invisible_to_other_tokens_and_anonymous_calls(hub: HubStandIn, tmp_path: Path) -> None:
    api(hub).create_repo("alice/secret", repo_type="dataset", private=True)
    push(hub, {"README.md": CARD}, "alice/secret")
    for token in (BOB, False):
        with pytest.raises(RepositoryNotFoundError):
            api(hub, token).dataset_info("alice/secret")
        assert not api(hub, token).repo_exists("alice/secret", repo_type="dataset")
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("alice/secret", "README.md", repo_type="dataset", **where(hub, token, tmp_path))
    assert api(hub, READER).dataset_info("alice/secret").private  # alice's own read token sees it
    push(hub, {"README.md": CARD}, "alice/open")
    assert api(hub, False).dataset_info("alice/open").private is False  # a public repo needs no token


def test_a_commit_sends_text_inline_and_parquet_through_lfs(hub: HubStandIn) -> None:
    data = parquet()
    api(hub).create_repo("alice/primes", repo_type="dataset")
    start = len(hub.requests)
    operations = [CommitOperationAdd("README.md", CARD), CommitOperationAdd(PARQUET_PATH, data)]
    sha = api(hub).create_commit("alice/primes", operations, commit_message="push", repo_type="dataset").oid
    repo, oid = dataset(hub), hashlib.sha256(data).hexdigest()
    assert repo.files["README.md"] == CARD and repo.files[PARQUET_PATH] == data
    assert repo.lfs == {PARQUET_PATH} and hub.lfs_uploads == [oid]
    assert repo.commit_shas[-1] == sha == api(hub).dataset_info("alice/primes").sha
    assert (hub.commits[-1].added, hub.commits[-1].deleted) == (["README.md", PARQUET_PATH], [])
    assert hub.requests[start : start + 6] == [
        ("POST", "/api/validate-yaml"),  # the card's metadata, checked first
        ("POST", "/api/datasets/alice/primes/preupload/main"),
        ("POST", "/datasets/alice/primes.git/info/lfs/objects/batch"),
        ("PUT", f"/lfs-objects/dataset/alice/primes/{oid}"),  # the Parquet bytes; the card goes in the commit
        ("POST", "/datasets/alice/primes.git/info/lfs/objects/verify"),
        ("POST", "/api/datasets/alice/primes/commit/main"),
    ]


def test_an_unchanged_parquet_file_is_never_uploaded_twice(hub: HubStandIn) -> None:
    data = parquet()
    first = push(hub, {"README.md": CARD, PARQUET_PATH: data})
    commits, uploads = len(hub.commits), list(hub.lfs_uploads)
    assert push(hub, {"README.md": CARD, PARQUET_PATH: data}) == first  # all unchanged: the client commits nothing
    push(hub, {"README.md": CARD + b"more\n", PARQUET_PATH: data})  # the card changed, the shard did not
    push(hub, {"data/copy.parquet": data})  # the same bytes at a new path: stored already, so no PUT
    assert len(hub.commits) == commits + 2 and hub.lfs_uploads == uploads
    assert dataset(hub).files["data/copy.parquet"] == data and "data/copy.parquet" in dataset(hub).lfs
    push(hub, {PARQUET_PATH: parquet(5)})
    assert len(hub.lfs_uploads) == len(uploads) + 1


def test_deletes_remove_files_and_folders(hub: HubStandIn) -> None:
    push(hub, {"README.md": CARD, PARQUET_PATH: parquet(), "data/other/x.parquet": parquet(2)})
    operations = [CommitOperationDelete("data/answer/"), CommitOperationDelete("README.md")]
    api(hub).create_commit("alice/primes", operations, commit_message="clean", repo_type="dataset")
    assert sorted(dataset(hub).files) == [".gitattributes", "data/other/x.parquet"]
    assert sorted(hub.commits[-1].deleted) == ["README.md", PARQUET_PATH] and hub.commits[-1].message == "clean"


def test_fail_next_commit_answers_once_and_changes_nothing(hub: HubStandIn) -> None:
    push(hub, {"README.md": CARD, PARQUET_PATH: parquet()})
    before, shas, commits = dict(dataset(hub).files), list(dataset(hub).commit_shas), len(hub.commits)
    hub.fail_next_commit = 500
    operations: list[CommitOperation] = [
        CommitOperationAdd(PARQUET_PATH, parquet(6)),
        CommitOperationDelete("README.md"),
    ]
    with pytest.raises(HfHubHTTPError, match="told to fail this commit") as failed:
        api(hub).create_commit("alice/primes", operations, commit_message="x", repo_type="dataset")
    assert failed.value.response.status_code == 500 and hub.fail_next_commit is None
    assert (dataset(hub).files, dataset(hub).commit_shas, len(hub.commits)) == (before, shas, commits)
    push(hub, {PARQUET_PATH: parquet(6)})  # the next one goes through
    assert len(hub.commits) == commits + 1


def test_a_commit_on_a_stale_parent_is_refused(hub: HubStandIn) -> None:
    first = push(hub, {"README.md": CARD})
    push(hub, {"README.md": CARD + b"\nnewer\n"})
    operations = [CommitOperationAdd("README.md", b"# stale\n")]
    with pytest.raises(HfHubHTTPError) as stale:
        api(hub).create_commit("alice/primes", operations, commit_message="x", repo_type="dataset", parent_commit=first)
    assert stale.value.response.status_code == 412 and dataset(hub).files["README.md"] == CARD + b"\nnewer\n"


def test_listings_give_git_blob_ids_and_lfs_details(hub: HubStandIn) -> None:
    data = parquet()
    sha256 = hashlib.sha256(data).hexdigest()
    old = push(hub, {"README.md": b"# old\n"})
    push(hub, {"README.md": CARD, PARQUET_PATH: data})
    client = api(hub)
    assert client.list_repo_files("alice/primes", repo_type="dataset") == [".gitattributes", "README.md", PARQUET_PATH]
    tree = {entry.path: entry for entry in client.list_repo_tree("alice/primes", repo_type="dataset", recursive=True)}
    assert sorted(tree) == [".gitattributes", "README.md", "data", "data/answer", PARQUET_PATH]
    readme, shard, folder = tree["README.md"], tree[PARQUET_PATH], tree["data"]
    assert isinstance(readme, RepoFile) and isinstance(shard, RepoFile) and isinstance(folder, RepoFolder)
    assert (readme.blob_id, readme.size, readme.lfs) == (git_blob(CARD), len(CARD), None)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    assert (shard.blob_id, shard.size) == (git_blob(pointer), len(data))  # git stores the pointer
    assert shard.lfs is not None and (shard.lfs.sha256, shard.lfs.size) == (sha256, len(data))
    assert shard.lfs.pointer_size == len(pointer)
    top = [entry.path for entry in client.list_repo_tree("alice/primes", repo_type="dataset")]
    assert top == [".gitattributes", "README.md", "data"]
    inside = client.list_repo_tree("alice/primes", "data", repo_type="dataset", recursive=True)
    assert [entry.path for entry in inside] == ["data/answer", PARQUET_PATH]
    paths = ["README.md", "data", "missing.txt"]
    infos = client.get_paths_info("alice/primes", paths, repo_type="dataset", expand=False)
    assert [(type(info), info.path) for info in infos] == [(RepoFile, "README.md"), (RepoFolder, "data")]
    assert isinstance(infos[0], RepoFile) and infos[0].blob_id == git_blob(CARD)
    assert isinstance(infos[1], RepoFolder) and infos[1].tree_id == folder.tree_id
    at_old = client.list_repo_files("alice/primes", repo_type="dataset", revision=old)
    assert at_old == [".gitattributes", "README.md"]


def test_a_download_is_cached_and_read_again_offline(
    hub: HubStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = parquet()
    sha = push(hub, {"README.md": CARD, PARQUET_PATH: data})
    place = where(hub, ALICE, tmp_path / "hf-home" / "hub")  # the url outlives the server, as a cached one does

    def download() -> Path:
        return Path(hf_hub_download("alice/primes", PARQUET_PATH, repo_type="dataset", **place))

    def snapshot() -> Path:
        return Path(snapshot_download("alice/primes", repo_type="dataset", **place))

    shard = download()
    assert shard.read_bytes() == data and sha in shard.parts
    resolve = ("GET", f"/datasets/alice/primes/resolve/main/{PARQUET_PATH}")
    gets = hub.requests.count(resolve)
    assert download() == shard and hub.requests.count(resolve) == gets  # the ETag matched: a HEAD, no GET
    folder = snapshot()
    assert (folder / "README.md").read_bytes() == CARD and (folder / PARQUET_PATH).read_bytes() == data

    hub.stop()  # nothing answers now: what follows comes from the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download().read_bytes() == data and snapshot() == folder


def test_a_file_is_read_in_byte_ranges(hub: HubStandIn) -> None:
    data = parquet()
    push(hub, {PARQUET_PATH: data})
    fs = HfFileSystem(endpoint=hub.url, token=ALICE)
    with fs.open(f"datasets/alice/primes/{PARQUET_PATH}", "rb", block_size=8) as file:
        file.seek(4)
        assert file.read(8) == data[4:12]
    assert fs.cat_file(f"datasets/alice/primes/{PARQUET_PATH}", start=-4) == data[-4:]


def test_a_model_repo_works_the_same(hub: HubStandIn, tmp_path: Path) -> None:
    client = api(hub)
    assert client.create_repo("alice/tiny") == f"{hub.url}/alice/tiny"
    weights = bytes(range(256)) * 4
    operations = [CommitOperationAdd("config.json", b'{"a": 1}'), CommitOperationAdd("weights.bin", weights)]
    client.create_commit("alice/tiny", operations, commit_message="weights")
    assert hub.repos["model/alice/tiny"].lfs == {"weights.bin"}
    assert client.model_info("alice/tiny").sha == hub.repos["model/alice/tiny"].commit_shas[-1]
    path = hf_hub_download("alice/tiny", "weights.bin", endpoint=hub.url, token=ALICE, cache_dir=tmp_path)
    assert Path(path).read_bytes() == weights


def test_the_client_switches_are_set_while_running_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with HubStandIn() as hub:
        assert constants.HF_HUB_DISABLE_XET and os.environ["HF_HUB_DISABLE_XET"] == "1"
        assert hub.env["HF_ENDPOINT"] == hub.url
    assert constants.HF_HUB_DISABLE_XET is False and "HF_HUB_DISABLE_XET" not in os.environ


def test_a_subprocess_pushes_with_hf_endpoint_and_datasets_loads_it(hub: HubStandIn, tmp_path: Path) -> None:
    (tmp_path / "train.parquet").write_bytes(parquet())
    (tmp_path / "README.md").write_bytes(CARD)
    script = f"""
        from huggingface_hub import CommitOperationAdd, HfApi
        import datasets
        api = HfApi()  # the endpoint and the token come from the environment
        api.create_repo("alice/primes", repo_type="dataset", exist_ok=True)
        files = {{"README.md": {str(tmp_path / "README.md")!r}, {PARQUET_PATH!r}: {str(tmp_path / "train.parquet")!r}}}
        operations = [CommitOperationAdd(path, local) for path, local in files.items()]
        api.create_commit("alice/primes", operations, commit_message="m", repo_type="dataset")
        rows = datasets.load_dataset("alice/primes", "answer", split="train")
        print([row["generation"] for row in rows])
    """
    env = {**os.environ, **hub.env, "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ALICE}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['p0', 'p1', 'p2']"
    assert len(hub.lfs_uploads) == 1 and dataset(hub).files["README.md"] == CARD
    assert ("GET", "/api/datasets/alice/primes/tree/" + dataset(hub).commit_shas[-1] + "/data") in hub.requests
