"""Pipelines end to end with scripted LLMs: the DAG, streaming order, failures, cache and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskloom import Pipeline, get_step, get_task
from taskloom.errors import GenerationError, MissingColumnError, RateLimitError
from taskloom.llms import AsyncLLM
from taskloom.pipeline import PipelineError
from taskloom.pipeline.run_folder import RunFolderError
from taskloom.retry import RetryPolicy
from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType, GenerateOutput

ROWS = [{"instruction": f"question {i}"} for i in range(30)]


class EchoLLM(AsyncLLM):
    """Answers 'answer to <prompt>' after a delay chosen per prompt; records when each request starts."""

    registry_name: ClassVar[str | None] = None
    slow: dict[str, float] = {}
    fail: dict[str, int] = {}
    delay: float = 0.001
    max_concurrency: int = 8

    @property
    def model_name(self) -> str:
        return "echo"

    async def acomplete(self, input: ChatType, num_generations: int, options: Any) -> GenerateOutput:
        prompt = str(input[-1]["content"])
        log = self.__dict__.setdefault("log", [])
        log.append(("start", prompt))
        in_flight = self.__dict__.get("in_flight", 0) + 1
        self.__dict__["in_flight"] = in_flight
        self.__dict__["max_in_flight"] = max(self.__dict__.get("max_in_flight", 0), in_flight)
        try:
            await asyncio.sleep(self.slow.get(prompt, self.delay))
            remaining = self.fail.get(prompt, 0)
            if remaining:
                self.fail[prompt] = remaining - 1
                raise RateLimitError("slow down")
            if prompt.endswith("bad"):
                raise GenerationError("the model refused")
        finally:
            self.__dict__["in_flight"] -= 1
        log.append(("end", prompt))
        texts = [f"answer to {prompt} #{i}" for i in range(num_generations)]
        return {
            "generations": texts,
            "statistics": {"input_tokens": [3] * num_generations, "output_tokens": [4] * num_generations},
        }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_chain_keeps_input_order_whatever_finishes_first(tmp_path: Path) -> None:
    slow = {f"question {i}": 0.05 for i in range(0, 30, 3)}  # every third row is slow
    answer = get_task("text-generation", name="answer", llm=EchoLLM(slow=slow))
    pipeline = Pipeline(answer, source=ROWS, name="order")
    result = pipeline.run(output=tmp_path / "run")
    rows = read_jsonl(result.files["answer"])
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]
    assert all(r["generation"] == f"answer to {r['instruction']} #0" for r in rows)
    assert result.stats.done == 30
    assert result.stats.steps["answer"].requests == 30


def test_a_slow_row_does_not_hold_back_the_others(tmp_path: Path) -> None:
    llm = EchoLLM(slow={"question 0": 0.5}, max_concurrency=4)
    pipeline = Pipeline(get_task("text-generation", llm=llm), source=ROWS, name="slow")
    pipeline.run(output=tmp_path / "run")
    log = llm.__dict__["log"]
    slow_end = log.index(("end", "question 0"))
    started_before = {p for event, p in log[:slow_end] if event == "start"}
    assert len(started_before) == 30, "every other row was requested while the slow one was in flight"
    assert llm.__dict__["max_in_flight"] == 4, "the window keeps max_concurrency requests in flight"


def test_branch_and_join_combine_generations(tmp_path: Path) -> None:
    first = get_task("text-generation", name="first", llm=ScriptedAsyncLLM(model="m1", replies=["A"]))
    second = get_task("text-generation", name="second", llm=ScriptedAsyncLLM(model="m2", replies=["B"]))
    group = get_step("group-columns", name="group", columns=["generation", "model_name"])
    pipeline = Pipeline([first, second] >> group, source=ROWS[:5], name="join")
    rows = read_jsonl(pipeline.run(output=tmp_path / "run").files["group"])
    assert len(rows) == 5
    assert all(r["generations"] == ["A", "B"] and r["model_names"] == ["m1", "m2"] for r in rows)


def test_generate_then_judge_chain(tmp_path: Path) -> None:
    answer = get_task("text-generation", name="answer", llm=ScriptedAsyncLLM(replies=["Madrid."]))
    judge = get_task(
        "text-generation",
        name="judge",
        llm=ScriptedAsyncLLM(replies=["5"]),
        input_mappings={"instruction": "generation"},
        output_mappings={"generation": "verdict"},
    )
    result = Pipeline(answer >> judge, source=ROWS[:3], name="judge").run(output=tmp_path / "run")
    rows = read_jsonl(result.files["judge"])
    assert [(r["generation"], r["verdict"]) for r in rows] == [("Madrid.", "5")] * 3
    assert {"raw_output_answer", "raw_output_judge"} <= set(rows[0]["distilabel_metadata"])


def test_missing_column_is_found_before_any_call(tmp_path: Path) -> None:
    llm = ScriptedAsyncLLM()
    judge = get_task("text-generation", name="judge", llm=llm, input_mappings={"instruction": "answer"})
    with pytest.raises(PipelineError, match=r"Step 'judge' needs the column 'answer'.*instruction"):
        Pipeline(judge, source=ROWS, name="bad").run(output=tmp_path / "run")
    assert llm.calls == []
    assert not (tmp_path / "run").exists()


def test_failures_are_recorded_and_counted_and_retries_too(tmp_path: Path) -> None:
    rows = [{"instruction": "fine"}, {"instruction": "this is bad"}, {"instruction": "flaky"}]
    llm = EchoLLM(fail={"flaky": 2}, retry=RetryPolicy(max_attempts=3, initial_delay=0.001))
    result = Pipeline(get_task("text-generation", name="t", llm=llm), source=rows, name="fail").run(
        output=tmp_path / "run"
    )
    out = read_jsonl(result.files["t"])
    assert [r["generation"] for r in out] == ["answer to fine #0", None, "answer to flaky #0"]
    assert "refused" in out[1]["distilabel_metadata"]["error_t"]
    stats = result.stats.steps["t"]
    assert (stats.rows_failed, stats.retries, stats.output_tokens) == (1, 2, 8)


def test_rerun_resumes_from_the_cache_and_asks_nothing_twice(tmp_path: Path) -> None:
    first = EchoLLM()
    task = get_task("text-generation", name="t", llm=first, num_generations=2)
    Pipeline(task, source=ROWS, name="cached").run(output=tmp_path / "run")
    again = EchoLLM()
    task2 = get_task("text-generation", name="t", llm=again, num_generations=2)
    result = Pipeline(task2, source=[*ROWS, {"instruction": "new one"}], name="cached").run(output=tmp_path / "run")
    assert [p for e, p in again.__dict__["log"] if e == "start"] == ["new one"]
    assert result.stats.steps["t"].cached == 60
    assert len(read_jsonl(result.files["t"])) == 62


def test_no_cache_asks_again(tmp_path: Path) -> None:
    for _ in range(2):
        llm = EchoLLM()
        Pipeline(get_task("text-generation", llm=llm), source=ROWS[:4], name="nocache").run(
            output=tmp_path / "run", use_cache=False
        )
        assert len([e for e, _ in llm.__dict__["log"] if e == "start"]) == 4


def test_changed_generation_kwargs_are_new_generations(tmp_path: Path) -> None:
    llm = EchoLLM()
    Pipeline(get_task("text-generation", name="t", llm=llm), source=ROWS[:3], name="kw").run(output=tmp_path / "r")
    llm2 = EchoLLM(generation_kwargs={"temperature": 0.1})
    Pipeline(get_task("text-generation", name="t", llm=llm2), source=ROWS[:3], name="kw").run(output=tmp_path / "r")
    assert len(llm2.__dict__["log"]) == 6


def test_runtime_parameters_per_step(tmp_path: Path) -> None:
    llm = ScriptedAsyncLLM(replies=["x"])
    pipeline = Pipeline(get_task("text-generation", name="t", llm=llm), source=ROWS[:2], name="params")
    pipeline.run(
        {"t": {"num_generations": 3, "llm": {"generation_kwargs": {"temperature": 0.5}}}}, output=tmp_path / "r"
    )
    assert [c["num_generations"] for c in llm.calls] == [3, 3]
    assert llm.calls[0]["kwargs"] == {"temperature": 0.5}
    with pytest.raises(PipelineError, match="does not have; its steps are: t"):
        pipeline.run({"typo": {}}, output=tmp_path / "r2")


def test_another_pipelines_folder_is_refused(tmp_path: Path) -> None:
    Pipeline(get_task("text-generation", llm=ScriptedAsyncLLM()), source=ROWS[:1], name="one").run(output=tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RunFolderError):
        Pipeline(get_task("text-generation", llm=ScriptedAsyncLLM()), source=ROWS[:1], name="two").run(output=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_dry_run_shows_formatted_inputs_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    answer = get_task("text-generation", name="answer", llm=ScriptedAsyncLLM(replies=["A"]))
    keep = get_step("keep-columns", name="keep", columns=["instruction", "generation"])
    report = Pipeline(answer >> keep, source=ROWS, name="dry").dry_run()
    assert [s.name for s in report] == ["answer", "keep"]
    assert report[0].formatted == [[{"role": "user", "content": "question 0"}]]
    assert report[1].outputs == [{"instruction": "question 0", "generation": "A"}]
    assert not (tmp_path / "out").exists()


def test_sync_llm_runs_off_the_loop(tmp_path: Path) -> None:
    llm = ScriptedLLM(replies=["s"])
    result = Pipeline(get_task("text-generation", name="t", llm=llm), source=ROWS[:5], name="sync").run(
        output=tmp_path / "r"
    )
    assert [r["generation"] for r in read_jsonl(result.files["t"])] == ["s"] * 5


def test_a_step_error_stops_the_run_and_keeps_what_was_written(tmp_path: Path) -> None:
    rows = [*ROWS[:3], {"other": "no instruction"}]
    task = get_task("text-generation", name="t", llm=ScriptedAsyncLLM())
    with pytest.raises(MissingColumnError):
        Pipeline(task, source=rows, name="err").run(output=tmp_path / "r", use_cache=False)
    assert (tmp_path / "r" / "t.jsonl").exists()


def test_chain_operators_build_the_dag() -> None:
    a, b, c, d = (get_task("text-generation", name=n, llm=ScriptedAsyncLLM()) for n in "abcd")
    flow = a >> [b, c] >> d
    assert sorted(flow.edges) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    with pytest.raises(PipelineError, match="Two steps are named"):
        _ = a >> get_task("text-generation", name="a", llm=ScriptedAsyncLLM())


def test_async_clients_are_closed_on_the_run_loop(tmp_path: Path) -> None:
    closed: list[bool] = []

    class Closing(EchoLLM):
        async def aclose(self) -> None:
            closed.append(not asyncio.get_running_loop().is_closed())

    Pipeline(get_task("text-generation", llm=Closing()), source=ROWS[:2], name="close").run(output=tmp_path / "r")
    assert closed == [True]


def test_after_group_columns_only_the_first_branch_columns_are_assumed() -> None:
    first = get_task("text-generation", name="first", llm=ScriptedAsyncLLM())
    second = get_task(
        "text-generation", name="second", llm=ScriptedAsyncLLM(), output_mappings={"generation": "only_second"}
    )
    group = get_step("group-columns", name="group", columns=["model_name"])
    needs = get_task(
        "text-generation", name="needs", llm=ScriptedAsyncLLM(), input_mappings={"instruction": "only_second"}
    )
    with pytest.raises(PipelineError, match="needs the column 'only_second'"):
        Pipeline([first, second] >> group >> needs, source=ROWS[:1], name="cols").validate()


_EXIT_SCRIPT = """
import atexit, gc, json, sys
# Registered first, so it runs last: it sees what the interpreter's exit will walk.
atexit.register(lambda: print(json.dumps({"frozen": gc.get_freeze_count()}), flush=True))
if sys.argv[1] == "run":
    from taskloom import Pipeline, get_task
    from taskloom.testing.scripted import ScriptedLLM

    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["yes"]))
    Pipeline(task, source=[{"instruction": f"q{i}"} for i in range(50)], name="exits").run(
        output=sys.argv[2], progress=None
    )
else:
    import taskloom  # noqa: F401
"""


@pytest.mark.parametrize("ran", [True, False])
def test_a_process_that_ran_a_pipeline_exits_without_walking_its_objects_again(tmp_path: Path, ran: bool) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, "run" if ran else "import", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    frozen = json.loads(done.stdout.strip().splitlines()[-1])["frozen"]
    if ran:
        # The exit's collections skip what the run left alive; the run's rows are all on disk.
        assert frozen > 1000
        lines = (tmp_path / "out" / "answer.jsonl").read_text().splitlines()
        assert [json.loads(line)["generation"] for line in lines] == ["yes"] * 50
    else:
        assert frozen == 0  # importing taskloom alone changes nothing about the exit


class _CollectorLLM(ScriptedLLM):
    """Records the collector's settings while the run asks it for answers."""

    registry_name: ClassVar[str | None] = None

    def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        import gc

        _SEEN.append((gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()))
        return super().complete(inputs, num_generations, options)


_SEEN: list[tuple[tuple[int, ...], int, bool]] = []


def test_a_run_collects_rarely_and_skips_older_objects_then_puts_the_collector_back(tmp_path: Path) -> None:
    import gc

    from taskloom._collector import RUN_THRESHOLD

    before = gc.get_threshold()
    _SEEN.clear()
    task = get_task("text-generation", name="answer", llm=_CollectorLLM(replies=["yes"]))
    Pipeline(task, source=[{"instruction": "q"}], name="collects").run(output=tmp_path / "a", progress=None)
    (threshold, *older), frozen, enabled = _SEEN[0]
    assert threshold == RUN_THRESHOLD and older == list(before[1:]) and frozen > 1000 and enabled
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    # A collector the caller turned off stays off: the run neither collects nor freezes.
    _SEEN.clear()
    gc.disable()
    try:
        Pipeline(task, source=[{"instruction": "q"}], name="collects").run(output=tmp_path / "b", progress=None)
    finally:
        gc.enable()
    (seen,) = _SEEN
    assert seen == (before, 0, False)

    # A process that froze objects itself keeps its freeze after the run.
    gc.freeze()
    try:
        kept = gc.get_freeze_count()
        Pipeline(task, source=[{"instruction": "q"}], name="collects").run(output=tmp_path / "c", progress=None)
        assert gc.get_freeze_count() == kept and gc.get_threshold() == before
    finally:
        gc.unfreeze()


def test_runs_in_two_threads_leave_the_collector_as_they_found_it(tmp_path: Path) -> None:
    import gc
    import threading

    before = gc.get_threshold()
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()

    class Meeting(ScriptedLLM):
        registry_name: ClassVar[str | None] = None
        second: bool = False

        def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
            # The first run starts, then the second; the first ends while the second still runs.
            if self.second:
                second_inside.set()
                first_done.wait(timeout=30)
            else:
                first_inside.set()
                second_inside.wait(timeout=30)
            return super().complete(inputs, num_generations, options)

    def run(name: str, second: bool) -> None:
        task = get_task("text-generation", name="answer", llm=Meeting(replies=["yes"], second=second))
        Pipeline(task, source=[{"instruction": "q"}], name=name).run(output=tmp_path / name, progress=None)
        if not second:
            first_done.set()

    first = threading.Thread(target=run, args=("one", False))
    second = threading.Thread(target=run, args=("two", True))
    first.start()
    assert first_inside.wait(timeout=30)
    second.start()
    first.join(60)
    second.join(60)
    assert first_done.is_set() and second_inside.is_set()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


class HeldLLM(ScriptedLLM):
    """Knows whether it is loaded, and counts what loading it cost."""

    registry_name: ClassVar[str | None] = None
    loads: int = 0
    unloads: int = 0
    held: bool = False

    def load(self) -> None:
        if not self.held:
            self.loads += 1
            self.held = True

    def unload(self) -> None:
        if self.held:
            self.unloads += 1
            self.held = False

    def is_loaded(self) -> bool:
        return self.held


def test_a_run_leaves_an_llm_its_caller_loaded_loaded_and_loads_only_once(tmp_path: Path) -> None:
    llm = HeldLLM(replies=["yes"])
    llm.load()
    task = get_task("text-generation", name="answer", llm=llm)
    for run in range(3):
        result = Pipeline(task, source=[{"instruction": "q"}], name="held").run(
            output=tmp_path / str(run), progress=None
        )
        assert [row["generation"] for row in result.rows()] == ["yes"]
    assert (llm.loads, llm.unloads, llm.is_loaded()) == (1, 0, True)


def test_a_task_with_a_load_of_its_own_still_gets_it_every_run_beside_a_loaded_llm(tmp_path: Path) -> None:
    from taskloom import TextGeneration

    class Counting(TextGeneration):
        registry_name: ClassVar[str | None] = None
        prepared: int = 0

        def load(self) -> None:
            super().load()
            self.prepared += 1  # per-run state a task sets up in load

    llm = HeldLLM(replies=["yes"])
    llm.load()
    task = Counting(name="answer", llm=llm)
    for run in range(2):
        Pipeline(task, source=[{"instruction": "q"}], name="own-load").run(output=tmp_path / str(run), progress=None)
    assert task.prepared == 2 and (llm.loads, llm.unloads) == (1, 0)


def test_a_run_loads_what_it_needs_and_unloads_it_once_even_when_two_steps_share_an_llm(tmp_path: Path) -> None:
    llm = HeldLLM(replies=["yes"])
    first = get_task("text-generation", name="first", llm=llm)
    second = get_task("text-generation", name="second", llm=llm, input_mappings={"instruction": "generation"})
    Pipeline(first >> second, source=[{"instruction": "q"}], name="shared").run(output=tmp_path, progress=None)
    assert (llm.loads, llm.unloads, llm.is_loaded()) == (1, 1, False)


class TogetherLLM(ScriptedLLM):
    """A sync LLM that answers several calls together (as a local model that batches does)."""

    registry_name: ClassVar[str | None] = None
    together: int = 3
    in_flight: int = 0
    most: int = 0

    def requests_at_once(self) -> int:
        return self.together

    async def agenerate_batch(self, inputs: Any, num_generations: int = 1, **kwargs: Any) -> list[GenerateOutput]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return self.generate(inputs, num_generations, **kwargs)
        finally:
            self.in_flight -= 1


@pytest.mark.parametrize("together", [1, 3])
def test_a_run_keeps_as_many_calls_in_flight_as_the_llm_answers_at_once(tmp_path: Path, together: int) -> None:
    llm = TogetherLLM(replies=["fine"], together=together)
    task = get_task("text-generation", name="answer", llm=llm)
    result = Pipeline(task, source=[{"instruction": f"q{i}"} for i in range(12)], name="together").run(
        output=tmp_path, progress=None
    )
    assert llm.most == together
    assert result.stats.steps["answer"].max_concurrency == together
    assert [row["generation"] for row in result.rows()] == ["fine"] * 12


def test_run_json_times_each_step_and_records_its_output_columns(tmp_path: Path) -> None:
    """Steps overlap, so each gets its span in the run and its requests' time, not a share of the total."""
    llm = ScriptedAsyncLLM(replies=["an answer"], delay=0.05, max_concurrency=4)
    answer = get_task("text-generation", name="answer", llm=llm)
    keep = get_step("keep-columns", name="keep", columns=["instruction", "generation"])
    pipeline = Pipeline([answer, keep], source=[{"instruction": f"q{i}"} for i in range(12)], name="timed")
    pipeline.run(output=tmp_path / "out", progress=None)
    record = json.loads((tmp_path / "out" / "run.json").read_text())["runs"][-1]
    answered, kept = record["steps"]["answer"], record["steps"]["keep"]
    assert answered["outputs"] == ["generation"] and kept["outputs"] == ["instruction", "generation"]
    # 12 requests of 50 ms, 4 at a time: about 0.6 s of request time over about 0.15 s of span
    assert 12 * 0.05 * 0.9 <= answered["request_s"] < 12 * 0.05 * 3
    assert 0.1 <= answered["active_s"] <= record["elapsed_s"]
    assert 0 <= answered["started_s"] <= kept["started_s"] <= record["elapsed_s"]
    assert "request_s" not in kept and kept["active_s"] <= answered["active_s"] + 0.05
