"""The generation cache: keys that name exactly one generation, and rows that survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from taskloom.pipeline.cache import (
    CachedGeneration,
    CacheError,
    GenerationCache,
    GenerationStore,
    NullCache,
    UncacheableValueError,
    generation_key,
    llm_identity,
)
from taskloom.retry import RetryPolicy
from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType

CHAT: ChatType = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour: é"}]


def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


class Answer(BaseModel):
    colour: str


# -- keys ------------------------------------------------------------------------------------


def test_key_changes_with_every_part() -> None:
    identity = llm_identity(ScriptedLLM(model="a"))
    base = generation_key(identity, CHAT, {"temperature": 0.0}, 0)
    other_chat: ChatType = [{"role": "user", "content": "Name a colour"}]
    variants = [
        generation_key(llm_identity(ScriptedLLM(model="b")), CHAT, {"temperature": 0.0}, 0),
        generation_key(identity, other_chat, {"temperature": 0.0}, 0),
        generation_key(identity, CHAT, {"temperature": 0.5}, 0),
        generation_key(identity, CHAT, {}, 0),
        generation_key(identity, CHAT, {"temperature": 0.0}, 1),
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert generation_key(identity, CHAT, {"temperature": 0.0}, 0) == base
    assert len(base) == 64
    assert int(base, 16) >= 0


def test_key_ignores_kwarg_order() -> None:
    identity = llm_identity(ScriptedLLM())
    assert generation_key(identity, CHAT, {"a": 1, "b": 2}, 0) == generation_key(identity, CHAT, {"b": 2, "a": 1}, 0)


def test_message_order_matters() -> None:
    identity = llm_identity(ScriptedLLM())
    assert generation_key(identity, CHAT, {}, 0) != generation_key(identity, list(reversed(CHAT)), {}, 0)


def test_key_is_stable_across_processes() -> None:
    # Different hash seeds: a set's iteration order changes between them, the key must not.
    kwargs: dict[str, Any] = {"temperature": 0.7, "stop": frozenset({"alpha", "beta", "gamma", "delta"})}
    here = generation_key(llm_identity(ScriptedAsyncLLM(model="m")), CHAT, kwargs, 3)
    code = f"""
        from taskloom.pipeline.cache import generation_key, llm_identity
        from taskloom.testing.scripted import ScriptedAsyncLLM
        kwargs = {{"temperature": 0.7, "stop": frozenset({{"alpha", "beta", "gamma", "delta"}})}}
        print(generation_key(llm_identity(ScriptedAsyncLLM(model="m")), {CHAT!r}, kwargs, 3))
    """
    for seed in ("1", "2"):
        result = _run(code, {"PYTHONHASHSEED": seed})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == here


def test_structured_output_class_is_keyed_by_its_schema() -> None:
    identity = llm_identity(ScriptedLLM())
    by_class = generation_key(identity, CHAT, {"structured_output": Answer}, 0)
    by_schema = generation_key(identity, CHAT, {"structured_output": Answer.model_json_schema()}, 0)
    assert by_class == by_schema

    class Other(BaseModel):
        shade: str

    assert generation_key(identity, CHAT, {"structured_output": Other}, 0) != by_class


def test_odd_kwarg_values_are_keyed_deterministically() -> None:
    identity = llm_identity(ScriptedLLM())
    kwargs = {"instance": Answer(colour="red"), "blob": b"\x00\x01", "path": Path("/tmp/x"), "func": len}
    assert generation_key(identity, CHAT, kwargs, 0) == generation_key(identity, CHAT, dict(kwargs), 0)
    assert generation_key(identity, CHAT, {"blob": b"\x00"}, 0) != generation_key(identity, CHAT, {"blob": b"\x01"}, 0)


def test_a_value_without_a_stable_form_is_refused() -> None:
    class Opaque:
        pass

    with pytest.raises(UncacheableValueError, match="--no-cache"):
        generation_key(llm_identity(ScriptedLLM()), CHAT, {"thing": Opaque()}, 0)
    with pytest.raises(UncacheableValueError):
        generation_key(llm_identity(ScriptedLLM()), CHAT, {"fn": lambda x: x}, 0)


# -- identity --------------------------------------------------------------------------------


def test_identity_ignores_how_requests_are_sent() -> None:
    plain = ScriptedAsyncLLM(model="m")
    tuned = ScriptedAsyncLLM(
        model="m",
        max_concurrency=3,
        retry=RetryPolicy(max_attempts=2),
        generation_kwargs={"temperature": 1.0},
    )
    assert llm_identity(plain) == llm_identity(tuned)
    assert llm_identity(plain) != llm_identity(ScriptedAsyncLLM(model="n"))


def test_identity_ignores_timeouts_and_batch_bookkeeping() -> None:
    class TimedLLM(ScriptedLLM):
        timeout: float = 10.0
        connect_timeout: float = 5.0
        batch_id: str | None = None
        batch_poll_interval: float = 30.0
        seed: int = 0

    base = llm_identity(TimedLLM(model="m"))
    assert base == llm_identity(
        TimedLLM(model="m", timeout=99, connect_timeout=1, batch_id="batch_1", batch_poll_interval=2)
    )
    assert base != llm_identity(TimedLLM(model="m", seed=1))
    assert base != llm_identity(ScriptedLLM(model="m"))  # another class is another identity


def test_identity_honours_a_class_opt_out() -> None:
    class QuietLLM(ScriptedLLM):
        cache_exclude: ClassVar[frozenset[str]] = frozenset({"log_level"})
        log_level: str = "info"

    assert llm_identity(QuietLLM(log_level="debug")) == llm_identity(QuietLLM(log_level="info"))


def test_identity_is_canonical_json() -> None:
    import json

    identity = llm_identity(ScriptedLLM(model="m", replies=["x"]))
    data = json.loads(identity)
    assert data["model_name"] == "m"
    assert data["llm"]["type"] == "scripted"
    assert "generation_kwargs" not in data["llm"]
    assert identity == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- storage ---------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    with GenerationCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 0
        cache.put("k1", "hello", 3, 1)
        cache.put("k2", None, 4, None)
        cache.put_many([("k3", "a", 1, 1), ("k4", "b", None, None)])
        assert len(cache) == 4
        found = cache.get_many(["k1", "k2", "k3", "k4", "missing", "k1"])
        assert found == {
            "k1": CachedGeneration("hello", 3, 1),
            "k2": CachedGeneration(None, 4, None),
            "k3": CachedGeneration("a", 1, 1),
            "k4": CachedGeneration("b", None, None),
        }
        assert cache.get("missing") is None
        cache.put("k1", "again", 3, 1)
        assert cache.get("k1") == CachedGeneration("again", 3, 1)
        assert len(cache) == 4
    with GenerationCache(tmp_path / "cache.sqlite") as reopened:
        assert reopened.get("k2") == CachedGeneration(None, 4, None)
        assert reopened.get_many([]) == {}


def test_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    GenerationCache(tmp_path / "cache.sqlite").close()
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_get_many_with_more_keys_than_sqlite_binds(tmp_path: Path) -> None:
    with GenerationCache(tmp_path / "cache.sqlite") as cache:
        cache.put_many((f"key{i}", f"text{i}", i, i) for i in range(1500))
        asked = [f"key{i}" for i in range(0, 3000, 2)]
        found = cache.get_many(asked)
        assert len(found) == 750
        assert found["key1498"] == CachedGeneration("text1498", 1498, 1498)


def test_put_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    code = f"""
        import os, signal
        from taskloom.pipeline.cache import GenerationCache
        cache = GenerationCache({str(path)!r})
        for i in range(300):
            cache.put(f"key{{i}}", f"text{{i}}", i, 2 * i)
        os.kill(os.getpid(), signal.SIGKILL)
    """
    result = _run(code)
    assert result.returncode == -signal.SIGKILL, result.stderr
    with GenerationCache(path) as cache:
        assert len(cache) == 300
        found = cache.get_many([f"key{i}" for i in range(300)])
        assert found["key299"] == CachedGeneration("text299", 299, 598)
        assert len(found) == 300


def test_put_many_is_one_transaction(tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    def entries() -> Any:
        yield ("a", "x", 1, 1)
        raise Boom

    with GenerationCache(tmp_path / "cache.sqlite") as cache:
        with pytest.raises(Boom):
            cache.put_many(entries())
        assert len(cache) == 0
        cache.put_many([])
        assert len(cache) == 0


def test_usable_from_another_thread(tmp_path: Path) -> None:
    with GenerationCache(tmp_path / "cache.sqlite") as cache:

        def work(start: int) -> None:
            for i in range(start, start + 50):
                cache.put(f"k{i}", "t", 1, 1)

        threads = [threading.Thread(target=work, args=(n * 50,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(cache) == 200


def test_a_file_that_is_not_a_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database, just some bytes that go on and on" * 20)
    with pytest.raises(CacheError, match="--no-cache"):
        GenerationCache(path)
    assert path.read_bytes().startswith(b"this is not a database")


def test_a_cache_from_a_newer_taskloom(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(CacheError, match="newer taskloom"):
        GenerationCache(path)


def test_close_twice(tmp_path: Path) -> None:
    cache = GenerationCache(tmp_path / "cache.sqlite")
    cache.close()
    cache.close()


def test_null_cache_keeps_nothing() -> None:
    with NullCache() as cache:
        cache.put("k", "text", 1, 1)
        cache.put_many([("k2", "text", 1, 1)])
        assert cache.get_many(["k", "k2"]) == {}
        assert cache.get("k") is None
        assert len(cache) == 0
    cache.close()


def test_both_caches_fit_the_protocol(tmp_path: Path) -> None:
    stores: list[GenerationStore] = [NullCache(), GenerationCache(tmp_path / "cache.sqlite")]
    for store in stores:
        store.put("k", "v", None, None)
        store.close()


def test_a_version_1_cache_gains_answered_by_and_keeps_its_generations(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE generations (key TEXT PRIMARY KEY, text TEXT, input_tokens INTEGER, "
        "output_tokens INTEGER, created REAL NOT NULL)"
    )
    db.execute("INSERT INTO generations VALUES ('k', 'old text', 1, 2, 0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with GenerationCache(path) as cache:
        assert cache.get("k") == CachedGeneration("old text", 1, 2)
        cache.put_many([("n", "new", 3, 4, "openai:m")])
        assert cache.get("n") == CachedGeneration("new", 3, 4, "openai:m")
