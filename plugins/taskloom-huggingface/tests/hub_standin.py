"""A loopback stand-in for the Hugging Face Hub's HTTP API, for the real ``huggingface_hub`` client.

There is no network here, so a Hub push cannot be tested against huggingface.co, and the Hub
could not be asked to refuse a token or fail a commit on demand anyway. Mocking the client
would test our guess of it instead of the client, so this server plays the Hub's side of the
protocol on 127.0.0.1 instead: the client is pointed at it with ``HfApi(endpoint=server.url)``,
``endpoint=`` arguments, or ``HF_ENDPOINT`` in a subprocess (``server.env``), and everything on
the client's side runs as it would against the Hub. Its answers follow what the installed
client reads (``huggingface_hub/hf_api.py``, ``_commit_api.py``, ``lfs.py``, ``file_download.py``,
``utils/_http.py``); nothing here is more than the client needs, and everything is in memory.

The Hub stores large files with Xet, whose content-addressed chunk protocol (a separate CAS
server, binary xorbs and shards) is far beyond a test double; the client still speaks the older
LFS protocol (preupload, LFS batch, PUT, verify), which the Hub also accepts, when Xet is
disabled. The client decides that by itself, from ``HF_HUB_DISABLE_XET`` alone, so while the
server runs it sets that variable and the client's constant (and puts them back when it stops):
otherwise no upload from this process or its subprocesses could reach it. It does the same with
``HF_HUB_DISABLE_TELEMETRY``, without which the client's first request in a process looks up
huggingface.co itself (for its user-agent), whatever endpoint it was given.

Downloads are served straight from ``resolve``, with the ``ETag``, ``X-Repo-Commit`` and
``X-Linked-*`` headers the client's cache is keyed on (the Hub sends an LFS file's from a
redirect to its CDN, which the client reads the same way), so a test can download into a
temporary cache and read it again offline.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Commit", "HubStandIn", "Repo", "Snapshot"]

DEFAULT_USERS: Mapping[str, str] = {"hf_test_alice": "alice"}
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub takes nothing larger than 10 MiB into git itself
INVALID_TOKEN = "Invalid credentials in Authorization header"
# The Hub writes a .gitattributes like this (a longer list) into every new repo, and its preupload
# answer follows it: files matching a `filter=lfs` pattern go to LFS storage whatever their content.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        *("*.7z", "*.arrow", "*.bin", "*.bz2", "*.gz", "*.h5", "*.lz4", "*.npy", "*.npz", "*.onnx"),
        *("*.parquet", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar", "*.tgz", "*.xz"),
        *("*.zip", "*.zst", "*.flac", "*.mp3", "*.wav", "*.gif", "*.jpeg", "*.jpg", "*.png", "*.webp"),
        "*.mp4",
    )
)
KINDS = {"datasets": "dataset", "models": "model"}  # the API's plural -> the repo type
URL_PREFIX = {"dataset": "datasets/", "model": ""}  # the repo type -> its prefix in web and git URLs
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Set while the server runs (see the module docstring); telemetry is off so that the client's
# user-agent does not go to fetch the agent registry from huggingface.co, which is out of reach.
CLIENT_SWITCHES = ("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY")


@dataclass(frozen=True)
class Snapshot:
    """A repo's files as one commit left them (``lfs``: the paths stored as LFS), and when."""

    files: Mapping[str, bytes]
    lfs: frozenset[str]
    at: str


@dataclass
class Repo:
    """One repo: the head's ``files`` and which are ``lfs``, its commits, and its LFS storage.

    ``objects`` (sha256 -> content) is what was uploaded to the repo's LFS storage, committed or
    not, as on the Hub; ``trees`` keeps every commit's files for reads at an older revision.
    """

    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)
    commit_shas: list[str] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, Snapshot] = field(default_factory=dict)


@dataclass(frozen=True)
class Commit:
    """A commit made through the commit API, on ``repo`` ("dataset/<owner>/<name>").

    The commit the Hub makes when it creates a repo (its .gitattributes) is not one: it is only
    in the repo's ``commit_shas``, so that ``commits`` shows what clients committed.
    """

    repo: str
    message: str
    added: list[str]
    deleted: list[str]
    sha: str


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the token's user (``None`` for an anonymous call), and if it may write."""

    name: str | None
    writes: bool


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Refusal(Exception):
    """An error the Hub would answer: status, message (``X-Error-Message`` and ``{"error": ...}``), code."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, dict(headers or {})

    def answer(self) -> Answer:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return json_answer({"error": self.message}, self.status, headers)


@dataclass
class Call:
    """One request, as the routes see it."""

    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    caller: Caller

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as error:
            raise Refusal(400, f"The body is not JSON: {error}") from error

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or [""])[0].lower() in ("1", "true")


def json_answer(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Answer:
    content_type = {"Content-Type": "application/json; charset=utf-8"}
    return Answer(status, json.dumps(body).encode(), {**content_type, **(headers or {})})


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def git_sha1(kind: str, data: bytes) -> str:
    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha256 = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()


def blob_oid(data: bytes, is_lfs: bool) -> str:
    """The git blob sha1 the Hub lists: of the content, or of the LFS pointer git stores instead."""
    return git_sha1("blob", lfs_pointer(data) if is_lfs else data)


def parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def tree_oids(files: Mapping[str, bytes], lfs: Iterable[str]) -> dict[str, str]:
    """The git tree sha1 of every folder ("" for the root), built as git builds tree objects."""
    lfs = set(lfs)
    children: dict[str, dict[str, tuple[str, str]]] = {"": {}}  # folder -> name -> (mode, oid)
    for path in files:
        for folder in parents(path):
            children.setdefault(folder, {})
    for path, data in files.items():
        folder, _, name = path.rpartition("/")
        children[folder][name] = ("100644", blob_oid(data, path in lfs))
    oids: dict[str, str] = {}
    for folder in sorted(children, key=lambda f: -f.count("/") if f else 1):  # deepest first, the root last
        if folder:
            parent, _, name = folder.rpartition("/")
            children[parent][name] = ("40000", "")
        entries = children[folder]
        for name, (mode, _) in entries.items():
            if mode == "40000":
                entries[name] = (mode, oids[f"{folder}/{name}" if folder else name])
        ordered = sorted(entries.items(), key=lambda kv: kv[0] + ("/" if kv[1][0] == "40000" else ""))
        raw = b"".join(f"{mode} {name}\0".encode() + bytes.fromhex(oid) for name, (mode, oid) in ordered)
        oids[folder] = git_sha1("tree", raw)
    return oids


def commit_sha(tree: str, parent: str | None, message: str) -> str:
    stamp = f"HubStandIn <stand-in@localhost> {int(time.time())} +0000"
    lines = [f"tree {tree}", *([f"parent {parent}"] if parent else []), f"author {stamp}", f"committer {stamp}"]
    return git_sha1("commit", ("\n".join(lines) + f"\n\n{message}\n").encode())


def file_entry(path: str, data: bytes, is_lfs: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "file", "oid": blob_oid(data, is_lfs), "size": len(data), "path": path}
    if is_lfs:
        sha256 = hashlib.sha256(data).hexdigest()
        entry["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": len(lfs_pointer(data))}
    return entry


def looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)  # a sample may cut a character
    except UnicodeDecodeError:
        return True
    return False


def matches(path: str, pattern: str) -> bool:
    """Whether a .gitattributes or .gitignore pattern names ``path`` (the common cases of git's rules)."""
    if pattern.endswith("/"):
        return any(fnmatch.fnmatchcase(folder, pattern.strip("/")) for folder in parents(path))
    if "/" in pattern.strip("/"):
        return fnmatch.fnmatchcase(path, pattern.lstrip("/"))
    return fnmatch.fnmatchcase(path.rpartition("/")[2], pattern.lstrip("/"))


def lfs_patterns(gitattributes: bytes | None) -> list[str]:
    lines = (gitattributes or b"").decode(errors="replace").splitlines()
    return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]


def ignored(path: str, gitignore: str | None) -> bool:
    lines = [line.strip() for line in (gitignore or "").splitlines()]
    return any(matches(path, line) for line in lines if line and not line.startswith(("#", "!")))


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, end) inclusive of a one-part ``Range`` header, or ``None`` to send it all."""
    found = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if not found or found.groups() == ("", ""):
        return None
    first, last = found.groups()
    if not first:
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise Refusal(416, f"Range {header} is not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


Route = tuple[frozenset[str], re.Pattern[str], Callable[[Call], Answer]]
API = r"/api/(?P<plural>models|datasets)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
WEB = r"/(?:(?P<prefix>datasets)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
UPLOAD = r"/lfs-objects/(?P<kind>model|dataset)/(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<oid>[0-9a-f]{64})"  # our "S3"


class HubStandIn:
    """The Hub's HTTP API for the client's push, listing and download calls, on a loopback port.

    ``users`` maps tokens to user names, ``orgs`` organizations to their members, and tokens in
    ``read_only`` are read tokens: they read what their user may read and write nothing. Repos
    are under ``repos`` by "dataset/<owner>/<name>" (or "model/..."), and ``lfs_uploads``,
    ``commits`` and ``requests`` record what the client did. ``fail_next_commit`` set to a status
    makes the next commit answer it and change nothing.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        orgs: Mapping[str, Sequence[str]] | None = None,
        read_only: Iterable[str] = (),
    ) -> None:
        self.users = dict(DEFAULT_USERS if users is None else users)
        self.orgs = {org: list(members) for org, members in (orgs or {}).items()}
        self.read_only = set(read_only)
        self.repos: dict[str, Repo] = {}
        self.lfs_uploads: list[str] = []
        self.commits: list[Commit] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_next_commit: int | None = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._saved_client: dict[str, tuple[bool, str | None]] = {}
        self._routes = self._route_table()

    # -- lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the endpoint to give the client."""
        if self._server is None:
            raise RuntimeError("HubStandIn is not started: use it as a context manager, or call start()")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def env(self) -> dict[str, str]:
        """The environment a subprocess's client needs to talk to this server."""
        return {"HF_ENDPOINT": self.url, **dict.fromkeys(CLIENT_SWITCHES, "1")}

    def start(self) -> HubStandIn:
        if self._server is not None:
            raise RuntimeError("HubStandIn is already started")
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._configure_client()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            for connection in list(self._connections):  # kept-alive connections would go on being served
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self._restore_client()

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _configure_client(self) -> None:
        from huggingface_hub import constants

        self._saved_client = {name: (getattr(constants, name), os.environ.get(name)) for name in CLIENT_SWITCHES}
        for name in CLIENT_SWITCHES:
            setattr(constants, name, True)
            os.environ[name] = "1"

    def _restore_client(self) -> None:
        from huggingface_hub import constants

        for name, (constant, variable) in self._saved_client.items():
            setattr(constants, name, constant)
            if variable is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = variable
        self._saved_client = {}

    # -- dispatch

    def _route_table(self) -> list[Route]:
        table: list[tuple[str, str, Callable[[Call], Answer]]] = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/agent-harnesses", self._agent_harnesses),
            ("GET", API, self._repo_info),
            ("GET", API + r"/revision/(?P<rev>[^/]+)", self._repo_info),
            ("GET", API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", self._tree),
            ("POST", API + r"/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", API + r"/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", API + r"/commit/(?P<rev>[^/]+)", self._commit),
            ("POST", WEB + r"\.git/info/lfs/objects/batch", self._lfs_batch),
            ("POST", WEB + r"\.git/info/lfs/objects/verify", self._lfs_verify),
            ("PUT", UPLOAD, self._lfs_put),
            ("GET HEAD", WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self._resolve),
        ]
        return [(frozenset(methods.split()), re.compile(pattern), route) for methods, pattern, route in table]

    def _serve(self, method: str, target: str, headers: Message, body: bytes) -> Answer:
        split = urlsplit(target)
        with self._lock:
            self.requests.append((method, split.path))
        try:
            for methods, pattern, route in self._routes:
                found = pattern.fullmatch(split.path)
                if found and method in methods:
                    params = {key: unquote(value) for key, value in found.groupdict().items() if value is not None}
                    # an upload URL is pre-signed (S3's, on the Hub): it carries no token
                    caller = self._caller(headers) if method != "PUT" else Caller(None, False)
                    return route(Call(method, params, parse_qs(split.query), headers, body, caller))
            raise Refusal(404, f"HubStandIn does not serve {method} {split.path}")
        except Refusal as refusal:
            return refusal.answer()
        except Exception as error:  # a bug here: say so, rather than drop the connection
            return Refusal(500, f"HubStandIn failed: {type(error).__name__}: {error}").answer()

    def _caller(self, headers: Message) -> Caller:
        authorization = headers.get("authorization") or ""
        if not authorization:
            return Caller(None, False)
        token = authorization.removeprefix("Bearer ").strip()
        if token not in self.users:
            raise Refusal(401, INVALID_TOKEN)
        return Caller(self.users[token], token not in self.read_only)

    # -- permissions and lookups

    def _member(self, caller: Caller, namespace: str) -> bool:
        return caller.name is not None and (caller.name == namespace or caller.name in self.orgs.get(namespace, ()))

    def _key(self, call: Call) -> tuple[str, str, str]:
        params = call.params
        kind = params.get("kind") or KINDS.get(params.get("plural", ""), "")
        if not kind:
            kind = "dataset" if params.get("prefix") else "model"
        repo_id = f"{params['ns']}/{params['name']}"
        return f"{kind}/{repo_id}", kind, repo_id

    def _readable(self, call: Call) -> tuple[str, Repo]:
        key, _, repo_id = self._key(call)
        repo = self.repos.get(key)
        if repo is None or (repo.private and not self._member(call.caller, repo_id.split("/")[0])):
            raise Refusal(404, "Repository not found", "RepoNotFound")  # a private repo hides, as on the Hub
        return key, repo

    def _writable(self, call: Call) -> tuple[str, Repo]:
        key, repo = self._readable(call)
        _, kind, repo_id = self._key(call)
        caller, named = call.caller, f"the {kind} repo {repo_id}"
        if caller.name is None:
            raise Refusal(401, f"You must be authenticated to write to {named}")
        if not caller.writes:
            raise Refusal(403, f"The token of '{caller.name}' is a read token: it may not write to {named}")
        if not self._member(caller, repo_id.split("/")[0]):
            raise Refusal(403, f"'{caller.name}' has no write access to {named}")
        return key, repo

    def _resolve_revision(self, repo: Repo, revision: str) -> tuple[str, Mapping[str, bytes], frozenset[str]]:
        head = repo.commit_shas[-1]
        if revision in ("main", head):
            return head, repo.files, frozenset(repo.lfs)
        if COMMIT_SHA.fullmatch(revision) and revision in repo.trees:
            snapshot = repo.trees[revision]
            return revision, snapshot.files, snapshot.lfs
        raise Refusal(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _repo_url(self, kind: str, repo_id: str) -> str:
        return f"{self.url}/{URL_PREFIX[kind]}{repo_id}"

    # -- account and repos

    def _whoami(self, call: Call) -> Answer:
        name = call.caller.name
        if name is None:
            raise Refusal(401, INVALID_TOKEN)
        orgs = [{"type": "org", "name": org, "fullname": org} for org, members in self.orgs.items() if name in members]
        token = {"displayName": "stand-in", "role": "write" if call.caller.writes else "read", "createdAt": now()}
        return json_answer(
            {
                **{"type": "user", "id": hashlib.md5(name.encode()).hexdigest()[:24], "name": name, "fullname": name},
                **{"emailVerified": True, "canPay": False, "isPro": False, "periodEnd": None, "orgs": orgs},
                "auth": {"type": "access_token", "accessToken": token},
            }
        )

    def _create_repo(self, call: Call) -> Answer:
        body, caller = call.json(), call.caller
        kind = body.get("type") or "model"
        if kind not in URL_PREFIX:
            raise Refusal(400, f"HubStandIn serves model and dataset repos, not {kind} repos")
        name, namespace = str(body.get("name") or ""), body.get("organization") or caller.name
        if caller.name is None or namespace is None:
            raise Refusal(401, "You must be authenticated to create a repo")
        if not NAME.fullmatch(name) or name.endswith(".git"):
            raise Refusal(400, f"Invalid repo name: {name!r}")
        repo_id, key = f"{namespace}/{name}", f"{kind}/{namespace}/{name}"
        if not caller.writes or not self._member(caller, namespace):
            why = f"'{caller.name}' is not a member" if caller.writes else "this is a read token"
            message = f'You don\'t have the rights to create a {kind} under the namespace "{namespace}" ({why})'
            raise Refusal(403, message)
        with self._lock:
            if key in self.repos:
                url = self._repo_url(kind, repo_id)
                return json_answer({"error": f"You already created this {kind} repo", "url": url}, 409)
            private = body.get("visibility") == "private" or body.get("private") is True
            self.repos[key] = repo = Repo(private=private)
            self._record_commit(repo, {".gitattributes": GITATTRIBUTES.encode()}, set(), "initial commit")
        url, repo_oid = self._repo_url(kind, repo_id), git_sha1("repo", key.encode())[:24]
        return json_answer({"url": url, "name": repo_id, "id": repo_oid})

    def _validate_yaml(self, call: Call) -> Answer:
        return json_answer({"errors": [], "warnings": []})  # the client asks before a README.md is committed

    def _agent_harnesses(self, call: Call) -> Answer:
        return json_answer({"standardEnvVars": [], "harnesses": {}})  # asked for by a client with telemetry on

    def _repo_info(self, call: Call) -> Answer:
        key, repo = self._readable(call)
        _, kind, repo_id = self._key(call)
        with self._lock:
            sha, files, lfs = self._resolve_revision(repo, call.params.get("rev", "main"))
            blobs = call.flag("blobs")
            siblings = [self._sibling(path, data, path in lfs, blobs) for path, data in sorted(files.items())]
            return json_answer(
                {
                    **{"_id": git_sha1("repo", key.encode())[:24], "id": repo_id, "author": repo_id.split("/")[0]},
                    **{"sha": sha, "lastModified": repo.trees[repo.commit_shas[-1]].at, "private": repo.private},
                    **{"createdAt": repo.trees[repo.commit_shas[0]].at, "gated": False, "disabled": False},
                    **{"downloads": 0, "likes": 0, "tags": [], "siblings": siblings},
                    **({"modelId": repo_id} if kind == "model" else {}),
                    "usedStorage": sum(len(data) for data in files.values()),
                }
            )

    @staticmethod
    def _sibling(path: str, data: bytes, is_lfs: bool, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": path}
        sibling: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": blob_oid(data, is_lfs)}
        if is_lfs:
            sha256, pointer = hashlib.sha256(data).hexdigest(), lfs_pointer(data)
            sibling["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": len(pointer)}
        return sibling

    # -- listing

    def _entries(self, files: Mapping[str, bytes], lfs: frozenset[str]) -> dict[str, dict[str, Any]]:
        """Every file and folder of a tree, by path, as the tree and paths-info endpoints list them."""
        folders = tree_oids(files, lfs)
        entries = {path: {"type": "directory", "oid": oid, "size": 0, "path": path} for path, oid in folders.items()}
        entries.update({path: file_entry(path, data, path in lfs) for path, data in files.items()})
        entries.pop("", None)
        return entries

    def _tree(self, call: Call) -> Answer:
        _, repo = self._readable(call)
        with self._lock:
            _, files, lfs = self._resolve_revision(repo, call.params["rev"])
            entries = self._entries(files, lfs)
        folder = call.params.get("path", "").strip("/")
        if folder and entries.get(folder, {}).get("type") != "directory":
            raise Refusal(404, f"Entry not found: {folder} is not a folder of this revision", "EntryNotFound")
        inside = [path for path in entries if not folder or path.startswith(f"{folder}/")]
        if not call.flag("recursive"):
            depth = folder.count("/") + 1 if folder else 0
            inside = [path for path in inside if path.count("/") == depth]
        return json_answer([entries[path] for path in sorted(inside)])

    def _paths_info(self, call: Call) -> Answer:
        _, repo = self._readable(call)
        form = parse_qs(call.body.decode())
        with self._lock:
            _, files, lfs = self._resolve_revision(repo, call.params["rev"])
            entries = self._entries(files, lfs)
        return json_answer([entries[path.strip("/")] for path in form.get("paths", []) if path.strip("/") in entries])

    # -- pushing

    def _preupload(self, call: Call) -> Answer:
        _, repo = self._writable(call)
        if call.flag("create_pr"):
            raise Refusal(400, "HubStandIn does not open pull requests")
        body = call.json()
        with self._lock:
            head, files, lfs = self._resolve_revision(repo, call.params["rev"])
            patterns = lfs_patterns(files.get(".gitattributes"))
            gitignore = body.get("gitIgnore") or files.get(".gitignore", b"").decode(errors="replace")
            answers = [self._upload_mode(entry, files, lfs, patterns, gitignore) for entry in body.get("files", [])]
        return json_answer({"files": answers, "commitOid": head})

    @staticmethod
    def _upload_mode(
        entry: Mapping[str, Any], files: Mapping[str, bytes], lfs: frozenset[str], patterns: list[str], gitignore: str
    ) -> dict[str, Any]:
        path, size, sample = str(entry["path"]), int(entry["size"]), base64.b64decode(entry.get("sample", ""))
        as_lfs = size >= LFS_MIN_SIZE or looks_binary(sample) or any(matches(path, p) for p in patterns)
        answer: dict[str, Any] = {"path": path, "uploadMode": "lfs" if as_lfs else "regular"}
        answer["shouldIgnore"] = ignored(path, gitignore)
        if path in files:  # the client skips a file whose oid it finds unchanged
            data = files[path]
            answer["oid"] = hashlib.sha256(data).hexdigest() if path in lfs else git_sha1("blob", data)
        return answer

    def _lfs_batch(self, call: Call) -> Answer:
        key, repo = self._writable(call)
        body = call.json()
        if body.get("operation") != "upload":
            raise Refusal(400, "HubStandIn's LFS batch endpoint only takes uploads; downloads go through resolve")
        _, kind, repo_id = self._key(call)
        git_url = f"{self._repo_url(kind, repo_id)}.git/info/lfs/objects"
        with self._lock:
            stored = set(repo.objects)
        objects = []
        for item in body.get("objects", []):
            oid, size = str(item["oid"]), int(item["size"])
            if oid in stored:  # no "actions": the client uploads nothing
                objects.append({"oid": oid, "size": size})
                continue
            upload = {"href": f"{self.url}/lfs-objects/{key}/{oid}"}
            actions = {"upload": upload, "verify": {"href": f"{git_url}/verify"}}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        lfs_json = {"Content-Type": "application/vnd.git-lfs+json"}
        return json_answer({"transfer": "basic", "objects": objects}, headers=lfs_json)

    def _lfs_put(self, call: Call) -> Answer:
        key = f"{call.params['kind']}/{call.params['ns']}/{call.params['name']}"
        oid = call.params["oid"]
        if hashlib.sha256(call.body).hexdigest() != oid:
            raise Refusal(400, f"The content uploaded does not have the sha256 {oid}")
        with self._lock:
            repo = self.repos.get(key)
            if repo is None:
                raise Refusal(404, "Repository not found", "RepoNotFound")
            repo.objects[oid] = call.body
            self.lfs_uploads.append(oid)
        return Answer(200, b"", {"ETag": f'"{hashlib.md5(call.body).hexdigest()}"'})

    def _lfs_verify(self, call: Call) -> Answer:
        _, repo = self._writable(call)
        body = call.json()
        with self._lock:
            data = repo.objects.get(str(body.get("oid")))
        if data is None or len(data) != body.get("size"):
            raise Refusal(404, f"LFS object {body.get('oid')} was not uploaded")
        return json_answer({"success": True})

    def _commit(self, call: Call) -> Answer:
        with self._lock:
            failure, self.fail_next_commit = self.fail_next_commit, None
        if failure is not None:
            raise Refusal(failure, "Internal Error - the stand-in was told to fail this commit (fail_next_commit)")
        key, repo = self._writable(call)
        if call.flag("create_pr"):
            raise Refusal(400, "HubStandIn does not open pull requests")
        if call.params["rev"] != "main":
            message = f"Invalid rev id: {call.params['rev']} (HubStandIn commits to main only)"
            raise Refusal(404, message, "RevisionNotFound")
        header, operations = self._parse_commit(call.body)
        with self._lock:
            parent = header.get("parentCommit")
            if parent and not repo.commit_shas[-1].startswith(str(parent)):
                raise Refusal(412, "A commit has happened since. Please refresh and try again.")
            files, lfs, added, deleted = self._apply(repo, operations)
            message = str(header.get("summary") or "")
            if header.get("description"):
                message += f"\n\n{header['description']}"
            sha = self._record_commit(repo, files, lfs, message)
            self.commits.append(Commit(key, message, added, deleted, sha))
        _, kind, repo_id = self._key(call)
        commit_url = f"{self._repo_url(kind, repo_id)}/commit/{sha}"
        answer = {"success": True, "commitOid": sha, "commitUrl": commit_url, "hookOutput": ""}
        return json_answer({**answer, "pullRequestUrl": None})

    @staticmethod
    def _parse_commit(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError as error:
            raise Refusal(400, f"The commit body is not NDJSON: {error}") from error
        if not lines or lines[0].get("key") != "header":
            raise Refusal(400, "A commit body starts with a header line")
        return dict(lines[0].get("value") or {}), lines[1:]

    @staticmethod
    def _apply(repo: Repo, operations: list[dict[str, Any]]) -> tuple[dict[str, bytes], set[str], list[str], list[str]]:
        """The files after ``operations``, built on copies, so that a refused commit changes nothing."""
        files, lfs, added, deleted = dict(repo.files), set(repo.lfs), [], []
        for operation in operations:
            kind, value = operation.get("key"), operation.get("value") or {}
            path = str(value.get("path", "")).strip("/")
            if kind == "file":
                content = str(value.get("content", ""))
                files[path] = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                lfs.discard(path)
                added.append(path)
            elif kind == "lfsFile":
                data = repo.objects.get(str(value.get("oid")))
                if data is None:
                    why = "an LFS pointer pointed to a file that does not exist"
                    raise Refusal(400, f"Your push was rejected because {why} ({path})")
                files[path] = data
                lfs.add(path)
                added.append(path)
            elif kind in ("deletedFile", "deletedFolder"):
                gone = [p for p in files if p == path or (kind == "deletedFolder" and p.startswith(f"{path}/"))]
                if not gone:
                    raise Refusal(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
                    lfs.discard(p)
                deleted.extend(gone)
            else:
                raise Refusal(400, f"HubStandIn does not take commit operations of kind {kind!r}")
        return files, lfs, added, deleted

    def _record_commit(self, repo: Repo, files: dict[str, bytes], lfs: set[str], message: str) -> str:
        parent = repo.commit_shas[-1] if repo.commit_shas else None
        sha = commit_sha(tree_oids(files, lfs)[""], parent, message)
        repo.files, repo.lfs = files, lfs
        repo.commit_shas.append(sha)
        repo.trees[sha] = Snapshot(dict(files), frozenset(lfs), now())
        return sha

    # -- downloads

    def _resolve(self, call: Call) -> Answer:
        _, repo = self._readable(call)
        with self._lock:
            sha, files, lfs = self._resolve_revision(repo, call.params["rev"])
            path = call.params["path"]
            data, is_lfs = files.get(path), path in lfs
        if data is None:
            raise Refusal(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        etag = f'"{hashlib.sha256(data).hexdigest() if is_lfs else git_sha1("blob", data)}"'
        headers = {"ETag": etag, "X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        headers["Content-Type"] = "application/octet-stream"
        if is_lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(len(data))})
        span = byte_range(call.headers.get("range"), len(data))
        if span is None:
            return Answer(200, data, headers)
        start, end = span
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Answer(206, data[start : end + 1], headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client dropping a kept-alive connection, or stop() cutting one, is not news


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (handler.headers.get("transfer-encoding") or "").lower():
        chunks = []
        while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        while handler.rfile.readline().strip():  # trailers, then the blank line
            pass
        return b"".join(chunks)
    return handler.rfile.read(int(handler.headers.get("content-length") or 0))


def _handler_for(owner: HubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each small answer waits ~40 ms for the client's delayed ACK
        wbufsize = 1 << 16  # the status line, headers and a small body leave in one write

        def setup(self) -> None:
            super().setup()
            with owner._lock:
                owner._connections.add(self.connection)

        def finish(self) -> None:
            with owner._lock:
                owner._connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("HEAD")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def _answer(self, method: str) -> None:
            answer = owner._serve(method, self.path, self.headers, _read_body(self))
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(answer.body)

    return Handler
