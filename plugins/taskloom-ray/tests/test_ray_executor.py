"""The Ray executor on a real local Ray cluster, against a real loopback HTTP server.

One cluster for the module, started by this process (4 logical CPUs and 2 of a made-up
``fake_gpu`` resource on this one machine), and the repo's loopback OpenAI-compatible server
(``taskloom.testing.ratelimited``), whose answers are a function of the prompt alone: a row made
twice, or a request paid twice, shows in its counts. What is only simulated here, and says so
where it is: several hosts (every worker shares this machine's file system), and a node that
cannot see the run folder (the driver's marker is made invisible instead).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from pydantic import PrivateAttr  # noqa: E402
from taskloom_ray.shards import ShardError  # noqa: E402

from taskloom import Pipeline, get_llm, get_task  # noqa: E402
from taskloom.plugin import Step  # noqa: E402
from taskloom.registry import get_executor  # noqa: E402
from taskloom.testing.ratelimited import RateLimitedServer  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster for the module; its GCS address, for drivers in other processes."""
    ray.init(num_cpus=4, resources={"fake_gpu": 2}, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture
def server() -> Iterator[RateLimitedServer]:
    with RateLimitedServer(delay=0.05) as running:
        yield running


def rows(count: int) -> list[dict[str, str]]:
    return [{"instruction": f"Question {i}: what is {i} + {i}?"} for i in range(count)]


def pipeline(server: RateLimitedServer, count: int, concurrency: int = 16, name: str = "sharded") -> Pipeline:
    llm = get_llm("openai", model="m", base_url=server.url, api_key="none", max_concurrency=concurrency)
    return Pipeline(get_task("text-generation", name="answer", llm=llm), source=rows(count), name=name)


def ray_executor(**settings: Any) -> Any:
    return get_executor("ray", **{"workers": 2, "shard_rows": 50, **settings})


def read_parts(folder: Path, leaf: str = "answer") -> list[dict[str, Any]]:
    found = []
    for part in sorted((folder / "data" / leaf).glob("part-*.jsonl")):
        text = part.read_text(encoding="utf-8")
        assert text.endswith("\n"), f"{part} ends in a torn line"
        found += [json.loads(line) for line in text.splitlines()]
    return found


def test_rows_equal_the_local_executors_rows(cluster: str, server: RateLimitedServer, tmp_path: Path) -> None:
    local = pipeline(server, 230).run(output=tmp_path / "local", progress=None)
    seen: list[int] = []
    sharded = pipeline(server, 230).run(
        output=tmp_path / "ray", progress=lambda stats: seen.append(stats.done), executor=ray_executor()
    )
    local_rows = list(local.rows())
    assert len(local_rows) == 230
    assert list(sharded.rows()) == local_rows  # every column, metadata included, in source order
    assert read_parts(tmp_path / "ray") == local_rows
    assert sharded.stats.done == 230
    assert sharded.stats.steps["answer"].requests == 230
    assert sharded.stats.steps["answer"].rows_out == 230
    assert seen and seen[-1] == 230  # the driver's display saw the workers' counters
    parts = sorted(p.name for p in (tmp_path / "ray" / "data" / "answer").iterdir())
    assert parts == [f"part-{i:05d}.jsonl" for i in range(5)]  # 230 rows in shards of 50
    manifest = json.loads((tmp_path / "ray" / "data" / "_manifests" / "part-00004.json").read_text())
    assert (manifest["start"], manifest["stop"], manifest["rows"], manifest["requests"]) == (
        200,
        230,
        {"answer": 30},
        30,
    )
    assert "generation" in manifest["columns"]["answer"]
    assert (tmp_path / "ray" / "data" / "_SUCCESS").exists()
    record = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert record["runs"][-1]["rows_written"] == 230
    assert (tmp_path / "ray" / "README.md").exists()  # the dataset card
    # the step's span and request time, merged over the shards, and its output columns
    answer = record["runs"][-1]["steps"]["answer"]
    assert answer["outputs"] == ["generation"] and answer["request_s"] >= 230 * 0.05
    assert answer["active_s"] > 0 and answer["started_s"] + answer["active_s"] <= record["runs"][-1]["elapsed_s"]
    # the run report reads the parts under data/ and the cache of every shard
    report = pytest.importorskip("taskloom_report")
    from taskloom_report.caches import read_caches

    assert report.build_report(tmp_path / "ray").rows == 230
    caches = read_caches(tmp_path / "ray")
    assert (caches.files, caches.generations) == (5, 230)


def test_requests_in_flight_reach_workers_times_max_concurrency(cluster: str, tmp_path: Path) -> None:
    with RateLimitedServer(delay=0.3) as slow:
        pipeline(slow, 400, concurrency=24).run(
            output=tmp_path / "run", progress=None, executor=ray_executor(shards_per_worker=1, shard_rows=100)
        )
        stats = slow.stats()
    assert stats["requests"] == 400
    assert stats["max_in_flight"] == 2 * 24  # two workers, each with its LLM's 24 in flight, never more


def test_a_rerun_skips_finished_shards_and_pays_nothing(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    first = pipeline(server, 120).run(output=tmp_path / "run", progress=None, executor=ray_executor())
    paid = server.stats()["requests"]
    again = pipeline(server, 120).run(output=tmp_path / "run", progress=None, executor=ray_executor())
    assert server.stats()["requests"] == paid == 120
    assert list(again.rows()) == list(first.rows())
    assert again.stats.done == 120
    assert again.stats.steps["answer"].requests == 0


def test_a_worker_killed_mid_shard_is_retried_and_the_run_completes(cluster: str, tmp_path: Path) -> None:
    with RateLimitedServer(delay=0.1) as server:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = pipeline(server, 300, concurrency=8).run(
                    output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=75)
                )
            except BaseException as error:
                outcome["error"] = error

        runner = threading.Thread(target=run)
        runner.start()
        deadline = time.monotonic() + 60
        while server.stats()["requests"] < 120:  # about 60 rows stored by the worker to be killed
            assert time.monotonic() < deadline, "the run never got going"
            assert runner.is_alive(), outcome
            time.sleep(0.01)
        workers = _worker_pids()
        assert workers, "no ShardWorker process found"
        os.kill(workers[0], signal.SIGKILL)
        runner.join(120)
        assert not runner.is_alive(), "the run hung after its worker died"
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result.stats.done == 300
        made = read_parts(tmp_path / "run")
        assert [row["instruction"] for row in made] == [row["instruction"] for row in rows(300)]
        # What the dead worker had in flight (its LLM's 8) may be asked again, and so may the answers
        # its cache writer had queued but not committed (a millisecond's worth, more on a loaded
        # machine: CI once saw 9); the rows it had stored (about 60) are not.
        assert server.stats()["paid_twice"] <= 8 + 16


def _worker_pids() -> list[int]:
    return _pids_titled(b"ray::ShardWorker")


def _pids_titled(prefix: bytes) -> list[int]:
    """The processes whose title starts with ``prefix`` (Ray titles an actor's ``ray::<Class>``), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if title.startswith(prefix):
                found.append(int(entry.name))
    return found


DRIVER = textwrap.dedent(
    """
    import sys
    from taskloom import Pipeline, get_llm, get_task
    from taskloom.registry import get_executor

    url, output, address = sys.argv[1], sys.argv[2], sys.argv[3]
    source = [{"instruction": f"Question {i}: what is {i} + {i}?"} for i in range(400)]
    llm = get_llm("openai", model="m", base_url=url, api_key="none", max_concurrency=8)
    executor = get_executor("ray", address=address, workers=2, shard_rows=50)
    Pipeline(get_task("text-generation", name="answer", llm=llm), source=source, name="sharded").run(
        output=output, progress=None, executor=executor
    )
    """
)


def test_a_killed_driver_reruns_paying_only_for_what_was_in_flight(cluster: str, tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    output = tmp_path / "run"
    with RateLimitedServer(delay=0.1) as server:
        driver = subprocess.Popen(
            [sys.executable, str(script), server.url, str(output), cluster],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 90
        try:
            while server.stats()["requests"] < 150:
                if driver.poll() is not None:
                    assert driver.stderr is not None
                    pytest.fail(f"the driver ended before it was killed: {driver.stderr.read()[-3000:]!r}")
                assert time.monotonic() < deadline, "the driver never sent enough requests"
                time.sleep(0.01)
            os.kill(driver.pid, signal.SIGKILL)
        finally:
            driver.kill()
            driver.wait(10)
            assert driver.stderr is not None
            driver.stderr.close()
        time.sleep(1.0)  # its workers die with their owner; let what they had sent arrive
        first = server.stats()["requests"]
        assert 150 <= first < 400
        rerun = subprocess.run(
            [sys.executable, str(script), server.url, str(output), cluster],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        stats = server.stats()
    # Paid at most once per row, plus what the killed workers had in flight (2 workers x 8) and
    # what their cache writers had queued but not committed.
    assert stats["paid_twice"] <= 2 * 8 + 16
    assert stats["requests"] <= 400 + 2 * 2 * 8
    made = read_parts(output)
    assert [row["instruction"] for row in made] == [row["instruction"] for row in rows(400)]
    assert all(row["generation"] for row in made)


def test_parts_read_with_datasets_pyarrow_and_ray_data(cluster: str, server: RateLimitedServer, tmp_path: Path) -> None:
    import datasets
    import pyarrow.dataset

    from taskloom import get_sink

    expected = [row["instruction"] for row in rows(120)]
    pipeline(server, 120).run(output=tmp_path / "jsonl", progress=None, executor=ray_executor())
    folder = tmp_path / "jsonl" / "data" / "answer"
    assert datasets.load_dataset("json", data_dir=str(folder), split="train")["instruction"] == expected
    assert sorted(r["instruction"] for r in ray.data.read_json(str(folder)).take_all()) == sorted(expected)

    as_parquet = pipeline(server, 120)
    as_parquet.sinks = [get_sink("parquet")]  # only what was asked for: a folder of one format
    as_parquet.run(output=tmp_path / "parquet", progress=None, executor=ray_executor())
    folder = tmp_path / "parquet" / "data" / "answer"
    assert sorted(p.name for p in folder.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
    assert (
        pyarrow.dataset.dataset(str(folder), format="parquet").to_table().column("instruction").to_pylist() == expected
    )
    assert datasets.load_dataset("parquet", data_dir=str(folder), split="train")["instruction"] == expected
    assert ray.data.read_parquet(str(folder)).count() == 120


class Locked(Step):
    """A step holding a lock: it cannot be pickled, so it cannot travel to a worker."""

    _guard: Any = PrivateAttr(default_factory=threading.Lock)

    @property
    def inputs(self) -> list[str]:
        return ["instruction"]

    @property
    def outputs(self) -> list[str]:
        return ["instruction"]

    def process(self, inputs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        yield inputs


def test_a_step_that_cannot_be_pickled_is_named(cluster: str, server: RateLimitedServer, tmp_path: Path) -> None:
    ran = Pipeline([Locked(name="guarded")], source=rows(10), name="locked")
    with pytest.raises(ShardError, match=r"Step 'guarded' cannot be sent to Ray workers: it does not pickle"):
        ran.run(output=tmp_path / "run", progress=None, executor=ray_executor())


def test_a_run_folder_the_workers_cannot_see_is_refused(
    cluster: str, server: RateLimitedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulated: one machine has one file system, so the driver's marker is made invisible to
    # the workers by naming one that does not exist, as a worker on another host would find it.
    from taskloom_ray import executor

    monkeypatch.setattr(executor._Run, "_marker", lambda self: tmp_path / "elsewhere" / ".driver-gone")
    started = time.monotonic()
    with pytest.raises(
        ShardError, match=r"A Ray worker could not start: .*cannot see the run folder .* shared POSIX file system"
    ):
        pipeline(server, 60).run(output=tmp_path / "run", progress=None, executor=ray_executor())
    assert time.monotonic() - started < 30  # a worker that cannot start is the run's error, not one to restart
    assert server.stats()["requests"] == 0


def test_more_workers_than_the_cluster_has_cpus_is_refused_not_left_waiting(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    with pytest.raises(ShardError, match=r"need 8 fake_gpu and the cluster has 2"):
        pipeline(server, 400).run(
            output=tmp_path / "run",
            progress=None,
            executor=ray_executor(workers=8, num_cpus=0.1, resources={"fake_gpu": 1}, shards_per_worker=1),
        )


def test_max_requests_holds_for_the_whole_cluster_and_a_rerun_resumes_without_paying_twice(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    from taskloom.errors import BudgetExceededError

    with pytest.raises(BudgetExceededError, match=r"Stopped at max_requests=50: .*run the same command again") as stop:
        pipeline(server, 200, concurrency=8).run(output=tmp_path / "run", max_requests=50, executor=ray_executor())
    paid = server.stats()["requests"]
    assert 40 <= paid <= 50  # never past the cap, whatever the four shards on two workers did
    assert stop.value.result.stats.stopping == "max_requests"  # type: ignore[attr-defined]
    assert not (tmp_path / "run" / "data" / "_SUCCESS").exists()
    done = pipeline(server, 200, concurrency=8).run(output=tmp_path / "run", progress=None, executor=ray_executor())
    assert done.stats.done == 200
    assert server.stats()["paid_twice"] == 0
    assert server.stats()["requests"] == 200


def test_a_dollar_budget_holds_for_the_whole_cluster(cluster: str, server: RateLimitedServer, tmp_path: Path) -> None:
    from taskloom.errors import BudgetExceededError

    llm = get_llm(
        "openai",
        model="m",
        base_url=server.url,
        api_key="none",
        max_concurrency=8,
        generation_kwargs={"max_new_tokens": 10},
    )
    priced = Pipeline(
        get_task("text-generation", name="answer", llm=llm),
        source=rows(400),
        name="priced",
        prices={"m": {"input": 1000, "output": 1000}},  # a thousandth of a dollar a token
    )
    with pytest.raises(BudgetExceededError, match=r"Stopped at the budget of \$1 ") as stop:
        priced.run(output=tmp_path / "run", progress=None, budget_usd=1.0, executor=ray_executor())
    stats = stop.value.result.stats  # type: ignore[attr-defined]
    assert 0.5 < stats.cost_usd <= 1.0, stats.cost_usd  # near the cap, never past it
    assert server.stats()["requests"] == stats.steps["answer"].requests < 400


def test_an_address_that_does_not_answer_fails_within_seconds(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "hi"}\n', encoding="utf-8")
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent(
            """
            name: unreachable
            source: {type: jsonl, path: in.jsonl}
            steps:
              - name: answer
                type: text-generation
                llm: {type: openai, model: m, base_url: "http://127.0.0.1:9/v1", api_key: none}
            """
        ),
        encoding="utf-8",
    )
    started = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "taskloom"),
            "run",
            str(config),
            "--executor",
            "ray",
            "--address",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert time.monotonic() - started < 20
    assert done.returncode == 2, done.stderr
    assert "No Ray cluster answers at 127.0.0.1:9" in done.stderr


def test_without_ray_the_error_says_what_to_install(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        from taskloom import Pipeline, get_llm, get_task
        from taskloom.registry import get_executor
        from taskloom_ray.executor import RayNotAvailableError
        try:
            Pipeline(get_task("text-generation", llm=get_llm("scripted")), source=[{"instruction": "x"}]).run(
                output=sys.argv[1], executor=get_executor("ray"))
        except RayNotAvailableError as error:
            print(error)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "run")], capture_output=True, text=True, timeout=60, check=False
    )
    assert "pip install taskloom-ray" in done.stdout, done.stderr[-2000:]


def test_the_workers_together_keep_the_rate_limit_the_user_set(cluster: str, tmp_path: Path) -> None:
    # The user sets 600 requests a minute (10 a second) where the server refuses past 700; two
    # workers each at the full limit would send 20 a second. No limit headers: the workers cannot
    # learn from the server's counts, so only the limiter actor they share keeps them under.
    with RateLimitedServer(requests_per_minute=700, delay=0.01, limit_headers=False) as limited:
        llm = get_llm(
            "openai", model="m", base_url=limited.url, api_key="none", max_concurrency=16, requests_per_minute=600
        )
        ran = Pipeline(get_task("text-generation", name="answer", llm=llm), source=rows(120), name="limited")
        result = ran.run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=30))
        stats = limited.stats()
    assert result.stats.done == 120
    assert stats["rate_limited"] == 0, stats  # with no shared limiter: about 60 of 180 requests refused
    assert stats["requests"] == 120
    assert result.stats.elapsed >= (120 - 9) / 10  # paced at the cluster's 10 a second, past the first burst


def test_a_rerun_cut_into_other_shards_is_refused_rather_than_mixing_parts(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    pipeline(server, 120).run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=50))
    with pytest.raises(ShardError, match=r"would cut differently \(shard_rows=40.*Rerun with the earlier shard_rows"):
        pipeline(server, 120).run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=40))
    assert len(read_parts(tmp_path / "run")) == 120


def dedup_pipeline(server: RateLimitedServer) -> Pipeline:
    from taskloom import get_step

    llm = get_llm("openai", model="m", base_url=server.url, api_key="none", max_concurrency=16)
    answer = get_task("text-generation", name="answer", llm=llm)
    dedup = get_step("deduplicate", name="dedup", columns=["instruction"], method="exact")
    keep = get_step("keep-columns", name="keep", columns=["instruction", "generation"])
    source = [{"instruction": f"Question {i % 70}"} for i in range(200)]  # each repeats in other shards
    return Pipeline([answer, dedup, keep], source=source, name="phased")


def test_a_deduplication_sees_every_shards_rows_and_the_rows_equal_the_local_executors(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    local = list(dedup_pipeline(server).run(output=tmp_path / "local", progress=None).rows())
    sharded = dedup_pipeline(server).run(output=tmp_path / "ray", progress=None, executor=ray_executor())
    assert len(local) == 70
    assert list(sharded.rows()) == local
    assert sharded.stats.steps["dedup"].dropped == {"exact duplicate of an earlier row": 130}
    assert sharded.stats.steps["answer"].requests == 200
    phases = sorted(p.name for p in (tmp_path / "ray" / "phases").iterdir())
    assert phases == ["00-to-answer", "01-dedup"]
    assert len(list((tmp_path / "ray" / "phases" / "01-dedup" / "data" / "dedup").glob("part-*.jsonl"))) == 1
    paid = server.stats()["requests"]
    again = dedup_pipeline(server).run(output=tmp_path / "ray", progress=None, executor=ray_executor())
    assert list(again.rows()) == local
    assert server.stats()["requests"] == paid  # every phase resumed from what it published


def test_a_step_needing_every_row_off_the_trunk_is_refused(cluster: str, server: RateLimitedServer) -> None:
    from taskloom_ray.phases import plan_phases

    from taskloom import get_step

    llm = get_llm("openai", model="m", base_url=server.url, api_key="none")
    answer = get_task("text-generation", name="answer", llm=llm)
    dedup = get_step("deduplicate", name="dedup", columns=["instruction"], method="exact")
    keep = get_step("keep-columns", name="keep", columns=["instruction"])
    branched = Pipeline(answer >> [dedup, keep], source=rows(4), name="branched")
    with pytest.raises(ShardError, match=r"Step 'dedup' needs every row at once .* neither before it nor after it"):
        plan_phases(branched, Path("unused"))
    assert len(plan_phases(pipeline(server, 4), Path("unused"))) == 1  # nothing needs every row: one phase


def local_model_pipeline(count: int) -> Pipeline:
    llm = get_llm("llamacpp", generation_kwargs={"max_new_tokens": 8, "temperature": 0})
    source = [{"instruction": f"Name a colour, number {i}."} for i in range(count)]
    return Pipeline(get_task("text-generation", name="answer", llm=llm), source=source, name="local-model")


def test_a_local_model_is_served_by_its_model_actors_with_the_local_executors_rows(
    cluster: str, tmp_path: Path
) -> None:
    """The real bundled model: loaded in two model actors, none in the shard workers."""
    local = list(local_model_pipeline(8).run(output=tmp_path / "local", progress=None).rows())
    model_pids: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            model_pids.update(_pids_titled(b"ray::ModelActor"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sharded = local_model_pipeline(8).run(
            output=tmp_path / "ray", progress=None, executor=ray_executor(shard_rows=2, model_actors=2)
        )
    finally:
        stop.set()
        watcher.join()
    assert [row["generation"] for row in sharded.rows()] == [row["generation"] for row in local]
    assert list(sharded.rows()) == local  # model_name, raw output and token counts too
    assert sharded.stats.steps["answer"].cost_text() == "$0 (local)"
    assert len(model_pids) == 2  # two copies of the model, whatever the number of shards and workers
    # The cache keys are the local model's own: the local run's cache holds every key of the shards'.
    local_keys = _cache_keys(tmp_path / "local" / "cache.sqlite")
    shard_keys = set().union(*(_cache_keys(p) for p in (tmp_path / "ray" / "shards").glob("*/cache.sqlite")))
    assert len(shard_keys) == 8
    assert shard_keys == local_keys


def test_magpie_from_nothing_on_model_actors_reads_the_template_and_equals_the_local_rows(
    cluster: str, tmp_path: Path
) -> None:
    """Magpie's own rows cut into shards; its template read through a model actor (the workers
    hold no model); each row's seed makes the rows those of a local run, whatever the shards."""
    pytest.importorskip("taskloom_synth")

    def magpie() -> Pipeline:
        llm = get_llm("llamacpp", generation_kwargs={"max_new_tokens": 12, "temperature": 0.8})
        return Pipeline(get_task("magpie", name="magpie", llm=llm, num_rows=6), name="magpie")

    local = list(magpie().run(output=tmp_path / "local", progress=None).rows())
    sharded = magpie().run(output=tmp_path / "ray", progress=None, executor=ray_executor(shard_rows=2, model_actors=1))
    assert [row["seed"] for row in sharded.rows()] == list(range(6))
    assert list(sharded.rows()) == local


def _cache_keys(path: Path) -> set[str]:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        return {key for (key,) in db.execute("SELECT key FROM generations")}


def test_rows_that_failed_are_asked_again_by_a_rerun_as_the_local_executor_does(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    def failing_once() -> Pipeline:
        llm = get_llm(
            "openai", model="m", base_url=server.url, api_key="none", max_concurrency=8, retry={"max_attempts": 1}
        )
        return Pipeline(get_task("text-generation", name="answer", llm=llm), source=rows(60), name="failing")

    server.down(500)
    first = failing_once().run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=30))
    assert first.stats.steps["answer"].rows_failed == 60
    server.down(None)
    again = failing_once().run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=30))
    assert again.stats.steps["answer"].rows_failed == 0
    assert all(row["generation"] for row in again.rows())
    assert server.stats()["answered"] == 60


def test_shards_run_at_once_on_one_worker_count_their_own_rows(
    cluster: str, server: RateLimitedServer, tmp_path: Path
) -> None:
    from taskloom import get_step

    def filtered() -> Pipeline:
        llm = get_llm("openai", model="m", base_url=server.url, api_key="none", max_concurrency=8)
        answer = get_task("text-generation", name="answer", llm=llm)
        odd = get_step("filter", name="odd", expression="n is odd")
        source = [{**row, "n": i} for i, row in enumerate(rows(200))]
        return Pipeline([answer, odd], source=source, name="filtered")

    local = filtered().run(output=tmp_path / "local", progress=None)
    sharded = filtered().run(
        output=tmp_path / "ray", progress=None, executor=ray_executor(workers=1, shard_rows=25, shards_per_worker=2)
    )
    assert list(sharded.rows()) == list(local.rows())
    assert sharded.stats.steps["odd"].dropped == local.stats.steps["odd"].dropped
    assert sum(local.stats.steps["odd"].dropped.values()) == 100


def test_a_step_class_written_in_a_script_travels_to_the_workers(cluster: str, tmp_path: Path) -> None:
    script = tmp_path / "custom.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from collections.abc import Iterator
            from typing import Any
            from taskloom import Pipeline, Step
            from taskloom.registry import get_executor

            class Shout(Step):
                @property
                def inputs(self) -> list[str]:
                    return ["instruction"]

                @property
                def outputs(self) -> list[str]:
                    return ["instruction"]

                def process(self, inputs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
                    yield [{"instruction": row["instruction"].upper()} for row in inputs]

            source = [{"instruction": f"row {i}"} for i in range(30)]
            result = Pipeline([Shout(name="shout")], source=source, name="custom").run(
                output=sys.argv[2], progress=None, executor=get_executor("ray", address=sys.argv[1], shard_rows=10)
            )
            print([row["instruction"] for row in result.rows()][:2])
            """
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script), cluster, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['ROW 0', 'ROW 1']" in done.stdout


def test_the_rate_limits_of_a_fallbacks_members_are_each_shared() -> None:
    from taskloom_ray.limits import limit_group, limited_llms, shared_limits

    first = get_llm("openai", model="a", base_url="http://127.0.0.1:9/v1", api_key="k1", requests_per_minute=600)
    second = get_llm("openai", model="b", base_url="http://127.0.0.1:9/v1", api_key="k2", tokens_per_minute=9000)
    unlimited = get_llm("openai", model="c", base_url="http://127.0.0.1:9/v1", api_key="k3")
    fallback = get_llm("fallback", llms=[first, second, unlimited])
    ran = Pipeline(get_task("text-generation", name="answer", llm=fallback), source=rows(2), name="fallback")
    assert [llm.model_name for llm in limited_llms(fallback)] == ["a", "b"]
    assert shared_limits(ran) == {limit_group(first): (600, None), limit_group(second): (None, 9000)}
    other_key = get_llm("openai", model="a", base_url="http://127.0.0.1:9/v1", api_key="k9", requests_per_minute=600)
    assert limit_group(first) != limit_group(other_key)


def test_429s_are_retried_on_the_workers_and_counted_in_the_summary(cluster: str, tmp_path: Path) -> None:
    # The server refuses past 300 a minute; the user set no limit, so the workers meet 429s, back
    # off (Retry-After), retry, and every row is answered once.
    with RateLimitedServer(requests_per_minute=300, delay=0.01) as strict:
        llm = get_llm("openai", model="m", base_url=strict.url, api_key="none", max_concurrency=16)
        ran = Pipeline(get_task("text-generation", name="answer", llm=llm), source=rows(60), name="refused")
        result = ran.run(output=tmp_path / "run", progress=None, executor=ray_executor(shard_rows=30))
        stats = strict.stats()
    assert result.stats.done == 60
    assert all(row["generation"] for row in result.rows())
    assert stats["rate_limited"] > 0
    assert result.stats.steps["answer"].rate_limited == stats["rate_limited"]  # the workers' counts, summed
    assert stats["answered"] == 60 and stats["paid_twice"] == 0
