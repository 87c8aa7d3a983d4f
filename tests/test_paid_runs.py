"""Paid runs under control: prices and dollars, the estimate, budgets and their resume, stops, failover.

Against the repo's rate-limited loopback server (``taskloom.testing.ratelimited``), which counts
every request and every prompt it answered, so "never paid twice" is checked by the server that
was paid, not by the client's own counters. The signal tests run ``taskloom run`` in a child
process and send it real SIGINT / SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from taskloom import Pipeline, get_llm, get_task
from taskloom.errors import BudgetExceededError
from taskloom.llms.limits import forget_limiters
from taskloom.pipeline.graph import PipelineError
from taskloom.pipeline.run_folder import RUN_FILENAME
from taskloom.pricing import DEFAULT_PRICES, PRICES_DATE, Price, PriceError, PriceTable, parse_prices
from taskloom.testing.ratelimited import RateLimitedServer

ROWS = [{"instruction": f"Write line number {i} of a poem about rivers."} for i in range(40)]
PRICE = {"input": 1.0, "output": 2.0}  # dollars per million tokens: easy sums


@pytest.fixture(autouse=True)
def _fresh_limiters() -> None:
    forget_limiters()


def pipeline(server: RateLimitedServer, *, model: str = "priced-model", name: str = "paid", **llm: Any) -> Pipeline:
    fields = {"model": model, "base_url": server.url, "api_key": "none", **llm}
    task = get_task("text-generation", name="answer", llm=get_llm("openai", **fields))
    task.llm.set_runtime_parameters({"generation_kwargs": {"max_new_tokens": 64}})  # type: ignore[union-attr]
    return Pipeline(task, source=ROWS, name=name, prices={"priced-model": PRICE})


# -- prices -----------------------------------------------------------------------------------------


def test_the_shipped_table_states_its_date_and_a_user_overrides_one_model() -> None:
    assert PRICES_DATE and "gpt-4o-mini" in DEFAULT_PRICES
    table = PriceTable(parse_prices({"gpt-4o-mini": {"input": 1, "output": 1}}, "test"))
    assert table.lookup("gpt-4o-mini") == Price(input=1, output=1)
    assert table.lookup("gpt-4o") == DEFAULT_PRICES["gpt-4o"]  # the others stay
    assert table.lookup("gpt-4o-mini-2024-07-18") == Price(input=1, output=1)  # a dated snapshot
    assert table.lookup("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    assert table.lookup("gpt-4o-minix") is None and table.lookup("my-model") is None


def test_price_arithmetic_with_cached_input_and_the_batch_discount() -> None:
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    assert price.cost(1_000_000, 0) == pytest.approx(2.0)
    assert price.cost(1_000_000, 1_000_000, cached_input_tokens=500_000) == pytest.approx(1.0 + 0.25 + 8.0)
    assert price.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"m": {"input": 1, "output": 1, "cahced_input": 1}}, "cahced_input"),
        ({"m": {"input": -1, "output": 1}}, "input"),
        ({"m": {"output": 1}}, "input"),
        ({"m": 3}, "must be a mapping"),
        (["m"], "prices map model names"),
    ],
)
def test_a_bad_price_table_is_refused_naming_the_model_and_field(table: Any, needle: str) -> None:
    with pytest.raises(PriceError) as caught:
        parse_prices(table, "pipeline.yaml: prices")
    assert needle in str(caught.value) and "pipeline.yaml" in str(caught.value)


def test_a_bad_price_table_in_a_pipeline_file_is_a_config_error(tmp_path: Path) -> None:
    from taskloom.pipeline.config import PipelineConfigError, load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(
        "source: [{instruction: hi}]\nsteps: [{type: text-generation, llm: scripted}]\n"
        "prices: {scripted: {input: 1, output: -2}}\n"
    )
    with pytest.raises(PipelineConfigError, match="scripted"):
        load_pipeline(path)


def test_the_config_file_prices_a_model_and_the_pipeline_file_wins(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[prices."priced-model"]\ninput = 5.0\noutput = 5.0\n[prices."other"]\ninput = 1\noutput = 1\n')
    monkeypatch.setenv("TASKLOOM_CONFIG", str(config))
    with RateLimitedServer() as server:
        table = pipeline(server).price_table()
    assert table.lookup("priced-model") == Price(**PRICE)
    assert table.lookup("other") == Price(input=1, output=1)


# -- dollars in the stats, the summary and run.json ----------------------------------------------


def test_dollars_per_step_and_run_come_from_the_reported_usage(tmp_path: Path) -> None:
    from taskloom.pipeline.progress import status_line, summary_table

    with RateLimitedServer() as server:
        result = pipeline(server).run(output=tmp_path / "out", progress=None)
    step = result.stats.steps["answer"]
    expected = (step.input_tokens * 1.0 + step.output_tokens * 2.0) / 1e6
    assert step.input_tokens > 0 and step.cost_usd == pytest.approx(expected)
    assert result.stats.cost_usd == pytest.approx(expected) and result.stats.priced
    assert "$" in summary_table(result.stats) and "$" in status_line(result.stats)
    record = json.loads((tmp_path / "out" / RUN_FILENAME).read_text())["runs"][-1]
    assert record["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert record["steps"]["answer"]["requests"] == len(ROWS)
    assert record["prices"]["priced-model"]["input"] == 1.0 and record["prices_date"] == PRICES_DATE


def test_a_model_with_no_price_shows_its_tokens_and_no_price(tmp_path: Path) -> None:
    from taskloom.pipeline.progress import summary_table

    with RateLimitedServer() as server:
        result = pipeline(server, model="unpriced-model").run(output=tmp_path / "out", progress=None)
    step = result.stats.steps["answer"]
    assert step.input_tokens > 0 and step.cost_usd == 0 and not step.priced
    assert step.cost_text() == "no price" and "no price" in summary_table(result.stats)
    record = json.loads((tmp_path / "out" / RUN_FILENAME).read_text())["runs"][-1]
    assert record["cost_usd"] is None and record["steps"]["answer"]["cost_usd"] is None


def test_a_resumed_run_costs_nothing_for_what_is_cached(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        first = pipeline(server).run(output=tmp_path / "out", progress=None)
        again = pipeline(server).run(output=tmp_path / "out", progress=None)
        assert server.stats()["paid_twice"] == 0
    assert first.stats.cost_usd > 0 and again.stats.cost_usd == 0 and again.stats.steps["answer"].cached == len(ROWS)
    runs = json.loads((tmp_path / "out" / RUN_FILENAME).read_text())["runs"]
    assert len(runs) == 2


# -- the estimate -------------------------------------------------------------------------------------


def test_the_estimate_counts_each_tasks_calls_and_bounds_output_by_max_new_tokens() -> None:
    with RateLimitedServer() as server:
        judge = get_task(
            "text-generation",
            name="second",
            num_generations=3,
            input_mappings={"instruction": "generation"},
            llm=get_llm("openai", model="priced-model", base_url=server.url, api_key="none", supports_n=False),
        )
        flow = pipeline(server)
        two = Pipeline([flow.steps["answer"], judge], source=ROWS, prices={"priced-model": PRICE})
        forecast = two.estimate(sample=10)
        assert server.stats()["requests"] == 0  # nothing was asked
    first, second = forecast.steps
    assert forecast.total_rows == len(ROWS) and forecast.sample_rows == 10
    assert first.requests == len(ROWS) and second.requests == 3 * len(ROWS)  # one request per generation
    assert first.output_tokens == 64 * len(ROWS) and first.output_bound == "max_new_tokens=64"
    assert second.output_bound == "max_new_tokens=512"  # the provider's default, since none was set there
    # The second step's prompt is the first step's answer, as long as max_new_tokens allows.
    assert second.input_tokens / second.requests > 60
    assert forecast.cost_usd == pytest.approx(sum(s.cost_usd or 0 for s in forecast.steps))
    assert "max_new_tokens=64" in forecast.table()


def test_cli_estimate_on_run_and_validate(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        path = _pipeline_file(tmp_path, server)
        for command in (["run", str(path), "--estimate"], ["validate", str(path), "--estimate"]):
            done = _cli(*command)
            assert done.returncode == 0, done.stderr
            assert "answer" in done.stdout and "$" in done.stdout and "max_new_tokens=64" in done.stdout
        as_json = json.loads(_cli("run", str(path), "--estimate", "--json").stdout)
        assert as_json["steps"][0]["requests"] == len(ROWS)
        assert server.stats()["requests"] == 0


def test_a_newcomers_estimate_on_the_quickstart() -> None:
    quickstart = Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml"
    done = _cli("run", str(quickstart), "--estimate")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no parse warnings about stand-in answers, no model loaded
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["step", "model", "requests"]
    assert sum("$0 (local)" in line for line in lines) == 3  # the local model costs no dollars
    assert all(f"max_new_tokens={n}" in done.stdout for n in (48, 1024, 256))


# -- budgets ------------------------------------------------------------------------------------------


def test_a_budget_stop_writes_what_was_done_and_a_larger_budget_resumes_without_paying_twice(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        flow = pipeline(server, max_concurrency=4)
        one_request = flow.estimate(sample=1).steps[0].one_request_usd
        budget = one_request * 10.5
        with pytest.raises(BudgetExceededError) as caught:
            flow.run(output=tmp_path / "out", progress=None, budget_usd=budget)
        stopped = caught.value.result
        assert stopped is not None
        spent = stopped.stats.cost_usd  # type: ignore[attr-defined]
        assert 0 < spent <= budget
        written = [json.loads(line) for line in (tmp_path / "out" / "answer.jsonl").read_text().splitlines()]
        paid = server.stats()["answered"]
        assert len(written) == paid and 0 < paid < len(ROWS)  # every answered row was written
        assert "larger budget" in str(caught.value)
        done = pipeline(server, max_concurrency=4).run(output=tmp_path / "out", progress=None, budget_usd=1.0)
        assert done.stats.done == len(ROWS)
        assert server.stats()["answered"] == len(ROWS) and server.stats()["paid_twice"] == 0


def test_max_requests_stops_after_that_many_requests(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        with pytest.raises(BudgetExceededError, match="max_requests=7"):
            pipeline(server, max_concurrency=3).run(output=tmp_path / "out", progress=None, max_requests=7)
        assert server.stats()["requests"] == 7


def test_budget_refusals_before_any_request(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        flow = pipeline(server)
        one_request = flow.estimate(sample=1).steps[0].one_request_usd
        with pytest.raises(PipelineError, match="cannot pay for one request") as caught:
            flow.run(output=tmp_path / "a", progress=None, budget_usd=one_request / 2)
        assert "may cost up to" in str(caught.value)
        with pytest.raises(PipelineError, match="has none"):
            pipeline(server, model="unpriced-model").run(output=tmp_path / "b", progress=None, budget_usd=5)
        for bad in (0, -1):
            with pytest.raises(PipelineError, match="budget_usd must be a positive"):
                flow.run(output=tmp_path / "c", progress=None, budget_usd=bad)
        with pytest.raises(PipelineError, match="max_requests must be at least 1"):
            flow.run(output=tmp_path / "d", progress=None, max_requests=0)
        assert server.stats()["requests"] == 0


def test_cli_budget_stop_exits_3_and_resumes(tmp_path: Path) -> None:
    with RateLimitedServer() as server:
        path = _pipeline_file(tmp_path, server, concurrency=2)
        stopped = _cli("run", str(path), "--max-requests", "5", "--progress", "none", cwd=tmp_path)
        assert stopped.returncode == 3, stopped.stderr
        assert "max_requests=5" in stopped.stderr and "Traceback" not in stopped.stderr
        resumed = _cli("run", str(path), "--budget-usd", "1", "--progress", "none", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert server.stats()["answered"] == len(ROWS) and server.stats()["paid_twice"] == 0


# -- a stop is a stop ------------------------------------------------------------------------------


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_cleanly_and_the_rerun_resumes(tmp_path: Path, signal_number: int) -> None:
    with RateLimitedServer(delay=0.3) as server:
        path = _pipeline_file(tmp_path, server, concurrency=4)
        child = _run_in_child(path, tmp_path)
        _wait_for(lambda: server.stats()["answered"] >= 4)
        child.send_signal(signal_number)
        _, err = child.communicate(timeout=30)
        assert child.returncode == 130, err
        assert "Traceback" not in err, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Interrupted" in lines[0] and "resume" in lines[0], err
        answered = server.stats()["answered"]
        written = (tmp_path / "out" / "answer.jsonl").read_text().splitlines()
        assert len(written) == answered < len(ROWS)  # in flight finished, and all of it was written
        resumed = _cli("run", str(path), "--progress", "none", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert server.stats()["answered"] == len(ROWS) and server.stats()["paid_twice"] == 0


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    with RateLimitedServer(delay=20) as server:  # answers that would take far longer than the test
        child = _run_in_child(_pipeline_file(tmp_path, server, concurrency=4), tmp_path)
        _wait_for(lambda: server.stats()["requests"] >= 4)
        started = time.monotonic()
        child.send_signal(signal.SIGINT)
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=30)
        assert time.monotonic() - started < 10
        assert child.returncode == 130 and "Traceback" not in err, err


def test_keyboard_interrupt_from_python_after_the_clean_up(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, threading
        from taskloom import Pipeline, get_llm, get_task
        from taskloom.errors import RunInterrupted
        llm = get_llm("openai", model="m", base_url={{url!r}}, api_key="none", max_concurrency=2)
        task = get_task("text-generation", name="answer", llm=llm)
        pipeline = Pipeline(task, source={ROWS!r}, name="py")
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            pipeline.run(output={str(tmp_path / "py")!r}, progress=None)
        except KeyboardInterrupt as stop:
            assert isinstance(stop, RunInterrupted), type(stop)
            print("rows", stop.result.stats.done)
        """
    )
    with RateLimitedServer(delay=0.3) as server:
        done = subprocess.run(
            [sys.executable, "-c", script.replace("{url!r}", repr(server.url))],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        rows = int(done.stdout.split()[-1])
        assert 0 < rows < len(ROWS) and rows == server.stats()["answered"]


# -- failover -----------------------------------------------------------------------------------------


def test_failover_goes_to_the_next_member_and_records_who_answered(tmp_path: Path) -> None:
    with RateLimitedServer() as first, RateLimitedServer() as second:
        first.down(503)
        spec = {
            "type": "fallback",
            "cooldown": 60,
            "max_concurrency": 2,
            "llms": [
                {"type": "openai", "model": "priced-model", "base_url": first.url, "api_key": "none",
                 "retry": {"max_attempts": 2, "initial_delay": 0.01}},
                {"type": "openai", "model": "backup-model", "base_url": second.url, "api_key": "none"},
            ],
        }  # fmt: skip
        from taskloom.config import llm_from_spec

        task = get_task("text-generation", name="answer", llm=llm_from_spec(spec))
        prices = {"priced-model": PRICE, "backup-model": {"input": 10.0, "output": 20.0}}
        flow = Pipeline(task, source=ROWS[:10], name="fo", prices=prices)
        result = flow.run(output=tmp_path / "out", progress=None)
        rows = list(result.rows())
        assert all(r["generation"] for r in rows)
        assert {r["distilabel_metadata"]["answered_by_answer"] for r in rows} == {"openai:backup-model"}
        # Resting after its failure, the first member was not asked again for every row.
        assert first.stats()["requests"] <= 2 * 2 and second.stats()["answered"] == 10
        step = result.stats.steps["answer"]
        assert step.cost_usd == pytest.approx((step.input_tokens * 10 + step.output_tokens * 20) / 1e6)
        # A resume finds everything in the cache, whichever member wrote it.
        first.down(None)
        again = Pipeline(
            get_task("text-generation", name="answer", llm=llm_from_spec(spec)), source=ROWS[:10], name="fo"
        ).run(output=tmp_path / "out", progress=None)
        assert again.stats.steps["answer"].cached == 10 and first.stats()["answered"] == 0
        resumed = list(again.rows())
        assert {r["distilabel_metadata"]["answered_by_answer"] for r in resumed} == {"openai:backup-model"}


def test_a_member_that_asks_for_a_long_wait_is_skipped_at_once() -> None:
    from taskloom.llms.fallback import FallbackLLM

    with RateLimitedServer(requests_per_minute=1, burst_seconds=1) as slow, RateLimitedServer() as other:
        members = [
            get_llm("openai", model="a", base_url=slow.url, api_key="none", adaptive_concurrency=False),
            get_llm("openai", model="b", base_url=other.url, api_key="none"),
        ]
        llm = FallbackLLM(llms=members, failover_wait=5)
        started = time.monotonic()
        try:
            outputs = llm.generate([[{"role": "user", "content": f"q{i}"}] for i in range(3)])
        finally:
            llm.unload()
        assert time.monotonic() - started < 5  # the first member's minute-long Retry-After was not waited for
        assert all(o["generations"][0] for o in outputs)
        assert {o["answered_by"][0] for o in outputs} <= {"openai:a", "openai:b"}
        assert other.stats()["answered"] >= 2


def test_an_exhausted_quota_is_not_retried_and_fails_over_at_once() -> None:
    from taskloom.errors import QuotaExceededError
    from taskloom.llms.fallback import FallbackLLM
    from taskloom.testing.http import Reply, ScriptedServer

    quota = Reply(
        status=429,
        body={"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                        "type": "insufficient_quota", "code": "insufficient_quota"}},
    )  # fmt: skip
    chat = [{"role": "user", "content": "hi"}]
    with ScriptedServer([quota]) as broke, RateLimitedServer() as other:
        alone = get_llm("openai", model="a", base_url=broke.url + "/v1", api_key="none")
        with pytest.raises(QuotaExceededError, match="Add credit"):
            alone.generate([chat])
        alone.unload()
        assert len(broke.requests) == 1  # not retried: waiting does not refill a quota
        members = [
            get_llm("openai", model="a", base_url=broke.url + "/v1", api_key="none"),
            get_llm("openai", model="b", base_url=other.url, api_key="none"),
        ]
        llm = FallbackLLM(llms=members)
        try:
            outputs = llm.generate([chat, chat, chat])
        finally:
            llm.unload()
        assert [o["answered_by"] for o in outputs] == [["openai:b"]] * 3
        assert len(broke.requests) <= 1 + 3  # each at most once, then left out


def test_a_fallback_naming_an_unknown_llm_is_refused_before_any_request(tmp_path: Path) -> None:
    from taskloom.pipeline.config import PipelineConfigError, load_pipeline

    path = tmp_path / "p.yaml"
    path.write_text(
        "source: [{instruction: hi}]\n"
        "steps: [{type: text-generation, llm: {type: fallback, llms: ['scripted', 'no-such-llm:x']}}]\n"
    )
    with pytest.raises(PipelineConfigError, match="no-such-llm") as caught:
        load_pipeline(path)
    assert "fallback member 1" in str(caught.value)


def test_several_keys_of_one_provider_through_key_env(monkeypatch: Any) -> None:
    from taskloom.config import llm_from_spec

    monkeypatch.setenv("KEY_ONE", "sk-one")
    monkeypatch.setenv("KEY_TWO", "sk-two")
    with RateLimitedServer() as server:
        llm = llm_from_spec(
            {
                "type": "fallback",
                "llms": [
                    {"type": "openai", "model": "m", "base_url": server.url, "key_env": "KEY_ONE"},
                    {"type": "openai", "model": "m", "base_url": server.url, "key_env": "KEY_TWO"},
                ],
            }
        )
        llm.load()
        try:
            [output] = llm.generate([[{"role": "user", "content": "hi"}]])
            assert output["generations"][0]
            members = llm.llms  # type: ignore[attr-defined]
            assert [m.loaded_key() for m in members] == ["sk-one", "sk-two"]
            assert members[0].limiter() is not members[1].limiter()  # each key has its own allowance
            assert "sk-one" not in json.dumps(llm.dump())
        finally:
            llm.unload()


# -- helpers ------------------------------------------------------------------------------------------


def _pipeline_file(tmp_path: Path, server: RateLimitedServer, concurrency: int = 8) -> Path:
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: paid
            source: rows.jsonl
            output: out
            steps:
              - name: answer
                type: text-generation
                llm: {{type: openai, model: priced-model, base_url: "{server.url}", api_key: none,
                       max_concurrency: {concurrency}, generation_kwargs: {{max_new_tokens: 64}}}}
            prices:
              priced-model: {{input: 1.0, output: 2.0}}
            """
        )
    )
    return path


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taskloom.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


def _run_in_child(path: Path, cwd: Path) -> subprocess.Popen[str]:
    """``taskloom run`` in a child process, to send it real signals."""
    command = [sys.executable, "-m", "taskloom.cli", "run", str(path), "--progress", "none"]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
