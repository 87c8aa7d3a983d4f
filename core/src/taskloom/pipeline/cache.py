"""The generation cache: every finished generation of a run, in SQLite, so a killed run resumes.

A run can die at any moment (SIGKILL, an out-of-memory kill, a dropped SSH session). What it paid for
must not be paid for again, so each generation is written the moment it finishes, keyed by
everything that decides its text: the LLM's identity, the formatted chat input, the generation
kwargs and the generation's index among the ``num_generations`` asked for the same input. A
rerun looks every key up first and only sends the requests whose keys are missing; because a key
names exactly one generation, the rerun's rows come out equal to those of an uninterrupted run.

Only finished generations are stored. A generation that failed (an error after retries) is never
written by the pipeline, so a resumed run tries it again instead of replaying the failure. A
``None`` text in the cache is a generation the provider finished without text (a refusal, a
content filter): that is an answer, not a failure, and it is replayed as such.

Durability: the database runs in WAL mode with ``synchronous=NORMAL``. A commit then reaches the
operating system before ``put`` returns, so killing the process loses nothing already put; only
a power loss or kernel crash can drop the last few commits, and even then the file stays
consistent (it loses recent rows, it is never corrupted). That trade keeps a put in the tens of
microseconds instead of the milliseconds an fsync per generation would cost.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from pathlib import PurePath
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self
from uuid import UUID

from pydantic import BaseModel

from taskloom.errors import TaskloomError
from taskloom.llms.options import json_schema_of
from taskloom.typing import ChatType

if TYPE_CHECKING:
    from taskloom.llms.base import LLM

CACHE_FILENAME = "cache.sqlite"
"""The cache's file name inside a run folder."""

_KEY_VERSION = 1
"""Part of every key: bump it when the key's recipe changes, so old entries simply stop matching."""

_SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of a cache file this code wrote; a newer file is refused, not misread.

Version 2 added ``answered_by`` (which member of a fallback wrote a generation); a version 1 file
gains the column when it is opened, and its generations keep working."""

_CHUNK = 500
"""Keys per ``IN (...)`` query: below SQLite's oldest default limit of 999 bound variables."""

IDENTITY_EXCLUDED_FIELDS: frozenset[str] = frozenset(
    {
        "generation_kwargs",
        "max_concurrency",
        "retry",
        "timeout",
        "batch_id",
        "batch_poll_interval",
        "requests_per_minute",
        "tokens_per_minute",
        "adaptive_concurrency",
        "key_env",
        "failover_wait",
        "cooldown",
    }
)
"""LLM fields that never change the text a model writes, so changing them keeps the cache valid.

``generation_kwargs`` is not ignored: it is part of the key on its own, merged with what the task
passes. The others are how and how fast requests are sent, not what is asked: a rerun with more
concurrency, another retry policy or a longer timeout must still find its generations. Any field
named ``*_timeout`` is treated like ``timeout``. An LLM class adds its own such fields with a
``cache_exclude: ClassVar[frozenset[str]]``.
"""


class CacheError(TaskloomError):
    """The cache file cannot be used (not a SQLite database, or written by a newer taskloom)."""


class UncacheableValueError(TaskloomError, TypeError):
    """A generation kwarg has no stable plain-data form, so no key could find it again next run."""


@dataclasses.dataclass(frozen=True, slots=True)
class CachedGeneration:
    """One stored generation: its text (``None`` if the provider answered without text) and token counts."""

    text: str | None
    input_tokens: int | None
    output_tokens: int | None
    answered_by: str | None = None
    """The LLM that wrote it, when one LLM stands for several (a fallback's member)."""


CacheEntry = tuple[str, str | None, int | None, int | None] | tuple[str, str | None, int | None, int | None, str | None]
"""``(key, text, input_tokens, output_tokens[, answered_by])``: one row for :meth:`GenerationCache.put_many`."""


# -- keys ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready stand-in for a value ``json`` cannot encode, the same in every process.

    ``repr`` is deliberately not a fallback: it often holds a memory address, and a key that
    differs from one process to the next would make every resume miss and pay again.
    """
    if isinstance(value, type) and issubclass(value, BaseModel):
        # The same rule the LLM's options apply to structured_output: the schema is the request.
        return json_schema_of(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": type(value).__qualname__, **dataclasses.asdict(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        # Set order depends on the per-process string hash seed: sort by each item's own encoding.
        return sorted((_plain_item(item) for item in value), key=_canonical_json)
    if isinstance(value, bytes | bytearray):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID | PurePath):
        return str(value)
    if isinstance(value, type) or callable(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if module and qualname and "<locals>" not in qualname and "<lambda>" not in qualname:
            return {"__callable__": f"{module}:{qualname}"}
    raise UncacheableValueError(
        f"A generation kwarg holds a {type(value).__qualname__}, which has no stable plain-data form, "
        "so its generations could not be found again on a rerun. Pass plain data (strings, numbers, lists, "
        "dicts) or a pydantic model instead, or run with --no-cache."
    )


def _plain_item(value: Any) -> Any:
    """Like :func:`_plain`, but passes through what ``json`` already encodes."""
    if value is None or isinstance(value, str | int | float | bool | list | tuple | dict):
        return value
    return _plain(value)


def _canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, no escaping of non-ASCII characters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)


def _excluded_fields(llm: LLM) -> frozenset[str]:
    own: frozenset[str] = getattr(type(llm), "cache_exclude", frozenset())
    return IDENTITY_EXCLUDED_FIELDS | frozenset(own)


def llm_identity(llm: LLM) -> str:
    """Canonical JSON of everything about ``llm`` that can change the text it writes.

    It is the LLM's dump (its type and fields, never a secret) without the fields in
    :data:`IDENTITY_EXCLUDED_FIELDS`, those ending in ``_timeout`` and those the class lists in
    ``cache_exclude``, plus ``model_name``, which a provider may derive from outside its fields
    (a bundled model file). Compute it once per LLM and pass it to :func:`generation_key`.
    """
    llm = llm.answers_as()
    excluded = _excluded_fields(llm)
    fields = {
        name: value for name, value in llm.dump().items() if name not in excluded and not name.endswith("_timeout")
    }
    return _canonical_json({"llm": fields, "model_name": llm.model_name})


def generation_key(identity: str, chat: ChatType, generation_kwargs: Mapping[str, Any], index: int) -> str:
    """The cache key of generation number ``index`` of ``chat``: a sha256 hex digest.

    ``generation_kwargs`` are the kwargs actually sent, the LLM's own merged with the task's;
    ``index`` tells apart the ``num_generations`` answers to one input, so asking for more
    generations on a rerun reuses the first ones and sends only the new ones. Raises
    :class:`UncacheableValueError` for a kwarg with no stable plain-data form.
    """
    payload = {
        "v": _KEY_VERSION,
        "llm": identity,
        "input": chat,
        "kwargs": dict(generation_kwargs),
        "index": index,
    }
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


# -- storage ---------------------------------------------------------------------------------


class GenerationStore(Protocol):
    """What the pipeline needs of a cache: :class:`GenerationCache` or, for ``--no-cache``, :class:`NullCache`."""

    def get(self, key: str) -> CachedGeneration | None: ...

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]: ...

    def put(
        self,
        key: str,
        text: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        answered_by: str | None = None,
    ) -> None: ...

    def put_many(self, entries: Iterable[CacheEntry]) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


# A rowid table, not WITHOUT ROWID: the texts are often larger than a twentieth of a page, where a
# clustered table spills into overflow pages; measured here, it made each put about 50% slower.
_CREATE = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    text TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    created REAL NOT NULL,
    answered_by TEXT
)
"""

_UPSERT = (
    "INSERT OR REPLACE INTO generations (key, text, input_tokens, output_tokens, created, answered_by) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class GenerationCache:
    """Finished generations of one run, in a SQLite file, written through on every put.

    Meant for one thread at a time (the pipeline's event loop), but a lock guards the connection
    so a worker thread may use it too. Stores only successes: the caller skips failed generations.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            # Autocommit (isolation_level=None): each put is its own transaction, committed on return.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as error:
            raise CacheError(f"Cannot open the generation cache {self.path!r}: {error}.") from error
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise CacheError(
                    f"The generation cache {self.path!r} was written by a newer taskloom (format {version}). "
                    "Upgrade taskloom, or run with --no-cache."
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_CREATE)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(generations)")}
            if "answered_by" not in columns:  # a version 1 file
                self._db.execute("ALTER TABLE generations ADD COLUMN answered_by TEXT")
            if version < _SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as error:
            raise CacheError(
                f"The generation cache {self.path!r} cannot be read ({error}). Delete it to start the "
                "generations over, or run with --no-cache."
            ) from error

    def get(self, key: str) -> CachedGeneration | None:
        """The generation stored under ``key``, if any."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]:
        """Every stored generation among ``keys``; missing keys are simply absent from the result."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, CachedGeneration] = {}
        with self._lock:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text, input_tokens, output_tokens, answered_by FROM generations "
                    f"WHERE key IN ({marks})",
                    chunk,
                )
                for key, text, input_tokens, output_tokens, answered_by in rows:
                    found[key] = CachedGeneration(text, input_tokens, output_tokens, answered_by)
        return found

    def put(
        self,
        key: str,
        text: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        answered_by: str | None = None,
    ) -> None:
        """Store one finished generation and commit at once, so a kill right after cannot lose it."""
        with self._lock:
            self._db.execute(_UPSERT, (key, text, input_tokens, output_tokens, time.time(), answered_by))

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        """Store many generations in one transaction: all of them or, if interrupted, none."""
        now = time.time()
        rows = [(*entry[:4], now, entry[4] if len(entry) > 4 else None) for entry in entries]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_UPSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT count(*) FROM generations").fetchone()[0]
        return count

    def close(self) -> None:
        """Close the file (SQLite folds the WAL back into it). Safe to call twice."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GenerationCache({self.path!r})"


class NullCache:
    """The cache of a ``--no-cache`` run: finds nothing and keeps nothing."""

    def get(self, key: str) -> CachedGeneration | None:
        return None

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]:
        return {}

    def put(
        self,
        key: str,
        text: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
        answered_by: str | None = None,
    ) -> None:
        return None

    def put_many(self, entries: Iterable[CacheEntry]) -> None:
        return None

    def __len__(self) -> int:
        return 0

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "NullCache()"


__all__ = [
    "CACHE_FILENAME",
    "IDENTITY_EXCLUDED_FIELDS",
    "CacheEntry",
    "CacheError",
    "CachedGeneration",
    "GenerationCache",
    "GenerationStore",
    "NullCache",
    "UncacheableValueError",
    "generation_key",
    "llm_identity",
]
