"""Pushing a finished run folder to the Hugging Face Hub as a dataset repository.

A run folder already holds what a dataset repo needs: one output per leaf step and a dataset
card whose ``configs`` name them. A push re-lays that for the Hub: each leaf becomes Parquet
shards under ``data/<leaf>/`` (the layout the Hub's viewer and ``datasets.load_dataset`` read),
and the card's ``configs`` point there. The shards are written deterministically (same rows,
same bytes), so a second push compares each file with the repo's copy and commits only what
changed, in a single commit: the Hub applies a commit whole or not at all, so a failed push
leaves the repo as it was, never half updated.

The push owns ``README.md`` and everything under ``data/``; other files in the repo (a
``LICENSE``, a loading script) are left alone. Nothing is uploaded before the token has been
checked and the repo exists with the visibility asked for.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from taskloom.plugin import CARD_FILENAME, TaskloomError, write_parquet

DATA_DIR = "data"
SHARD_BYTES = 256 * 1024 * 1024
"""Largest Parquet shard aimed for: small enough for the Hub's viewer and resumable uploads."""
SPLIT = "train"


class HubError(TaskloomError):
    """A push the Hub refused or that cannot start: no token, no write access, no card to push."""


@dataclass
class PushResult:
    """What a push did: the repo, the commit (None when nothing changed) and each file's fate."""

    repo_id: str
    url: str
    commit: str | None
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the terminal."""
        if self.commit is None:
            return f"{self.url}: up to date, nothing to upload ({len(self.unchanged)} files unchanged)."
        parts = [f"{len(self.uploaded)} uploaded", f"{len(self.unchanged)} unchanged"]
        if self.deleted:
            parts.append(f"{len(self.deleted)} removed")
        return f"{self.url}: pushed commit {self.commit[:8]} ({', '.join(parts)})."


def leaf_files(run_dir: Path, card: Any = None) -> dict[str, Path]:
    """Each leaf step's output file, as the run's dataset card (read here unless given) lists them under ``configs``."""
    data = (card if card is not None else _card(run_dir)).data.to_dict()
    files: dict[str, Path] = {}
    for config in data.get("configs") or []:
        name = config.get("config_name")
        paths = [entry.get("path") for entry in config.get("data_files") or [] if isinstance(entry, Mapping)]
        if not name or not paths:
            continue
        path = run_dir / str(paths[0])
        if not path.is_file():
            raise HubError(f"{run_dir}: the card lists {paths[0]} for {name!r}, but the file is not there.")
        files[str(name)] = path
    if not files:
        raise HubError(f"{run_dir / CARD_FILENAME} lists no leaf outputs under configs; run the pipeline again.")
    return files


def _card(run_dir: Path) -> Any:
    """The run's dataset card (a ``huggingface_hub.DatasetCard``), or a :class:`HubError` saying why there is none."""
    from huggingface_hub import DatasetCard

    path = run_dir / CARD_FILENAME
    if not path.is_file():
        raise HubError(
            f"{run_dir} has no dataset card ({CARD_FILENAME}): it is written when a run completes. "
            "Run the pipeline to its end into this folder, then push."
        )
    return DatasetCard.load(path)


def stage(run_dir: Path, staging: Path, files: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """Write the repo's files for ``run_dir`` under ``staging``: path in the repo -> local file.

    ``files`` gives each leaf's output (Parquet or JSON Lines); by default the ones the card lists.
    """
    card = _card(run_dir)
    files = dict(files) if files is not None else leaf_files(run_dir, card)
    staged: dict[str, Path] = {}
    for leaf, source in files.items():
        for shard in _shards(source, staging / DATA_DIR / leaf, staging):
            staged[shard.relative_to(staging).as_posix()] = shard
    card.data.configs = [
        {
            "config_name": leaf,
            "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/{leaf}/{SPLIT}-*"}],
            **({"default": True} if index == 0 else {}),
        }
        for index, leaf in enumerate(files)
    ]
    readme = staging / CARD_FILENAME
    readme.write_text(str(card), encoding="utf-8")
    staged[CARD_FILENAME] = readme
    return staged


def _shards(source: Path, folder: Path, staging: Path) -> Iterator[Path]:
    """Cut one leaf's rows into Parquet shards of about :data:`SHARD_BYTES`, named as ``datasets`` names them."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    if source.suffix == ".parquet":
        parquet = source
    else:  # JSON Lines: the Parquet sink's own conversion, so both give the same schema
        parquet = staging / f".{folder.name}.parquet"
        write_parquet(source, parquet)
    reader = pq.ParquetFile(parquet)
    rows = reader.metadata.num_rows
    count = max(1, math.ceil(parquet.stat().st_size / SHARD_BYTES))
    per_shard = max(1, math.ceil(rows / count))
    count = max(1, math.ceil(rows / per_shard))
    batches = reader.iter_batches(batch_size=min(per_shard, 10_000))
    pending: Any = None
    for index in range(count):
        path = folder / f"{SPLIT}-{index:05d}-of-{count:05d}.parquet"
        with pq.ParquetWriter(path, reader.schema_arrow) as writer:
            left = per_shard
            while left > 0:
                if pending is None:
                    pending = next(batches, None)
                    if pending is None:
                        break
                taken, pending = pending.slice(0, left), (pending.slice(left) if pending.num_rows > left else None)
                writer.write_batch(taken)
                left -= taken.num_rows
        yield path


def _oids(path: Path) -> tuple[str, str]:
    """The file's sha256 (what the Hub records for LFS files) and git blob sha1 (for the others)."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _unchanged(path: Path, remote: Any) -> bool:
    sha256, sha1 = _oids(path)
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return bool(lfs.sha256 == sha256)
    return bool(remote.blob_id == sha1)


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | SecretStr | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    files: Mapping[str, Path] | None = None,
) -> PushResult:
    """Push a finished run folder to the dataset repo ``repo_id``, uploading only what changed.

    The token is ``token``, else ``HF_TOKEN`` or the one ``hf auth login`` stored. ``private``
    creates the repo private, and refuses to push into an existing public one. ``endpoint``
    overrides ``HF_ENDPOINT`` (a Hub mirror, or a stand-in in tests).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    run_dir = Path(run_dir)
    secret = token.get_secret_value() if isinstance(token, SecretStr) else token
    secret = secret or get_token()
    if not secret:
        raise HubError(
            "No Hugging Face token: a push needs one with write access. Set HF_TOKEN, run "
            "`hf auth login`, or give token=...; tokens are made at https://huggingface.co/settings/tokens."
        )
    api = HfApi(endpoint=endpoint, token=secret)
    url = f"{api.endpoint}/datasets/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="taskloom-push-") as folder:
        staged = stage(run_dir, Path(folder), files)  # before any request: a bad folder fails here
        user = _check_token(api, HfHubHTTPError)
        head = _ensure_repo(api, repo_id, private, revision, user, HfHubHTTPError)
        remote = {
            entry.path: entry
            for entry in api.list_repo_tree(repo_id, repo_type="dataset", revision=head, recursive=True)
            if hasattr(entry, "blob_id")
        }
        result = PushResult(repo_id, url, None)
        operations: list[Any] = []
        for path_in_repo, local in sorted(staged.items()):
            if path_in_repo in remote and _unchanged(local, remote[path_in_repo]):
                result.unchanged.append(path_in_repo)
            else:
                operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(local)))
                result.uploaded.append(path_in_repo)
        for path_in_repo in sorted(remote):
            if path_in_repo.startswith(f"{DATA_DIR}/") and path_in_repo not in staged:
                operations.append(CommitOperationDelete(path_in_repo=path_in_repo))
                result.deleted.append(path_in_repo)
        if not operations:
            return result
        message = commit_message or f"taskloom: {len(result.uploaded)} files from run {run_dir.name}"
        try:
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=message,
                repo_type="dataset",
                revision=revision,
                parent_commit=head,  # someone else's push in between fails this one instead of being overwritten
            )
        except HfHubHTTPError as error:
            raise HubError(
                f"The Hub refused the push to {repo_id}; nothing was committed and the repo is as it was. "
                f"The Hub said: {_said(error)}"
            ) from error
        except Exception as error:  # a connection lost mid-upload: the commit was never made either
            raise HubError(
                f"The push to {repo_id} failed before its commit ({type(error).__name__}: {error}); nothing was "
                "committed and the repo is as it was. Run the same push again."
            ) from error
        result.commit = info.oid
        return result


def _said(error: Exception) -> str:
    message = getattr(error, "server_message", None) or str(error)
    return " ".join(str(message).split())


def _check_token(api: Any, http_error: type[Exception]) -> str:
    """The token's user name, or a :class:`HubError` saying why the Hub refused the token."""
    try:
        me = api.whoami()
    except http_error as error:
        raise HubError(
            "The Hub refused the token (is it valid, and not expired?). Make one with write access at "
            f"https://huggingface.co/settings/tokens. The Hub said: {_said(error)}"
        ) from error
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(
            f"The token of {me.get('name')!r} is a read token; a push needs one with write access "
            "(https://huggingface.co/settings/tokens)."
        )
    return str(me.get("name"))


def _ensure_repo(
    api: Any, repo_id: str, private: bool, revision: str | None, user: str, http_error: type[Exception]
) -> str:
    """Create the repo if it is not there, check its visibility; the head commit the push builds on.

    The repo is looked up first and created only when missing: asking to create one that exists
    under another namespace makes the client itself fail on a custom endpoint.
    """
    from huggingface_hub.errors import RepositoryNotFoundError

    refused = (
        f"{user!r} may not create or write the dataset repo {repo_id!r} with this token "
        "(a repo under another user's or an organization's name needs write access there)."
    )
    try:
        try:
            info = api.repo_info(repo_id, repo_type="dataset", revision=revision)
        except RepositoryNotFoundError:  # missing, or private to someone else: creating it tells which
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            info = api.repo_info(repo_id, repo_type="dataset", revision=revision)
    except http_error as error:
        raise HubError(f"{refused} The Hub said: {_said(error)}") from error
    if private and not info.private:
        raise HubError(
            f"{repo_id} exists and is public; --private would not make it private. Change its visibility "
            "on the Hub, or push without --private."
        )
    return str(info.sha)


__all__ = ["HubError", "PushResult", "leaf_files", "push_run", "stage"]
