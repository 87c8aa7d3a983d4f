"""A pipeline step in Batch API mode: one job for the rows, at the batch price, resumed by its id.

Against the loopback fake of OpenAI's Files and Batch endpoints (no real batch can be run here).
The kill test runs the pipeline in a child process, SIGKILLs it while its job is still in
progress, and checks that the rerun collects that job instead of submitting (and paying) again.
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
from openai_scripted_http import FakeBatchAPI
from taskloom_openai import OpenAILLM

from taskloom import Pipeline, get_task
from taskloom.pipeline.batching import BATCHES_FILENAME
from taskloom.retry import RetryPolicy

ROWS = [{"instruction": f"Question {i}?"} for i in range(12)]
PRICE = {"input": 1.0, "output": 2.0, "batch_discount": 0.5}


def batch_pipeline(api: FakeBatchAPI, **fields: Any) -> Pipeline:
    llm = OpenAILLM(
        model="batch-model",
        base_url=api.base_url,
        api_key="sk-test",
        batch_api=True,
        batch_poll_interval=0.01,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.01),
        **fields,
    )
    task = get_task("text-generation", name="answer", llm=llm)
    return Pipeline(task, source=ROWS, name="batched", prices={"batch-model": PRICE})


def uploads(api: FakeBatchAPI) -> int:
    return sum(1 for method, path in api.calls if method == "POST" and path == "/v1/files")


def test_a_batch_mode_step_sends_one_job_for_its_rows_at_the_batch_price(fake: FakeBatchAPI, tmp_path: Path) -> None:
    result = batch_pipeline(fake).run(output=tmp_path / "out", progress=None)
    rows = list(result.rows())
    assert len(rows) == len(ROWS) and all(r["generation"] for r in rows)
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS]  # source order kept
    assert len(fake.batches) == 1 and uploads(fake) == 1  # not one live request per row
    [batch_id] = fake.batches
    assert len(fake.requests_of(batch_id)) == len(ROWS)
    step = result.stats.steps["answer"]
    assert step.requests == len(ROWS) and step.rows_failed == 0
    full_price = (step.input_tokens * 1.0 + step.output_tokens * 2.0) / 1e6
    assert step.cost_usd == pytest.approx(full_price / 2)  # the batch discount
    assert json.loads((tmp_path / "out" / BATCHES_FILENAME).read_text()) == {}  # collected: forgotten
    again = batch_pipeline(fake).run(output=tmp_path / "out", progress=None)
    assert again.stats.steps["answer"].cached == len(ROWS) and len(fake.batches) == 1


def test_a_failed_job_records_its_error_on_every_row(fake: FakeBatchAPI, tmp_path: Path) -> None:
    fake.final_status = "failed"
    result = batch_pipeline(fake).run(output=tmp_path / "out", progress=None)
    rows = list(result.rows())
    assert all(r["generation"] is None for r in rows)
    assert all("failed" in r["distilabel_metadata"]["error_answer"] for r in rows)
    assert result.stats.steps["answer"].rows_failed == len(ROWS)


def test_a_killed_run_collects_its_job_instead_of_paying_again(fake: FakeBatchAPI, tmp_path: Path) -> None:
    fake.polls_before_done = 10**9  # never done while the first run lives
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_openai_batch_pipeline import batch_pipeline
        class Api:
            base_url = {fake.base_url!r}
        batch_pipeline(Api()).run(output={str(out)!r}, progress=None)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ((out / BATCHES_FILENAME).is_file() and json.loads((out / BATCHES_FILENAME).read_text())):
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the job was never recorded"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    [recorded] = json.loads((out / BATCHES_FILENAME).read_text()).values()
    assert recorded["batch_id"] in fake.batches and recorded["requests"] == len(ROWS)
    fake.polls_before_done = 0
    result = batch_pipeline(fake).run(output=out, progress=None)
    assert len(list(result.rows())) == len(ROWS)
    assert len(fake.batches) == 1 and uploads(fake) == 1  # collected, not submitted again
