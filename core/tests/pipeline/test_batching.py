"""How a pipeline cuts a batch-mode step's calls into jobs: whole, sorted, within the provider's size."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from taskloom import Pipeline, get_task
from taskloom.llms.options import GenerationOptions
from taskloom.testing.scripted import ScriptedAsyncLLM
from taskloom.typing import ChatType, GenerateOutput

JOBS: list[list[str]] = []


class BatchScripted(ScriptedAsyncLLM):
    """A scripted LLM in batch mode whose jobs take at most five requests, one per generation."""

    max_batch_requests: ClassVar[int] = 5
    batch_id: str | None = None

    def in_batch_mode(self) -> bool:
        return True

    def batch_requests(self, num_generations: int) -> int:
        return num_generations

    async def acomplete_batch(
        self, inputs: list[ChatType], num_generations: int, options: GenerationOptions
    ) -> list[GenerateOutput]:
        JOBS.append([chat[-1]["content"] for chat in inputs])
        return await super().acomplete_batch(inputs, num_generations, options)


def run(tmp_path: Path, rows: int, **task: Any) -> list[dict[str, Any]]:
    JOBS.clear()
    llm = BatchScripted(reply=lambda chat, index: f"answer {index} to {chat[-1]['content']}")
    step = get_task("text-generation", name="answer", llm=llm, **task)
    source = [{"instruction": f"q{i:02d}"} for i in range(rows)]
    return list(Pipeline(step, source=source).run(output=tmp_path / "out", progress=None).rows())


def test_jobs_hold_at_most_the_providers_requests_and_every_row_is_answered(tmp_path: Path) -> None:
    rows = run(tmp_path, 12)
    assert [len(job) for job in JOBS] == [5, 5, 2]
    assert sorted(q for job in JOBS for q in job) == [f"q{i:02d}" for i in range(12)]
    assert [r["generation"] for r in rows] == [f"answer 0 to q{i:02d}" for i in range(12)]


def test_a_provider_counting_each_generation_gets_fewer_inputs_per_job(tmp_path: Path) -> None:
    rows = run(tmp_path, 5, num_generations=2, group_generations=True)
    assert [len(job) for job in JOBS] == [2, 2, 1]  # two generations each: 4 requests a job, of 5
    assert all(len(r["generation"]) == 2 for r in rows)


def test_the_order_in_a_job_does_not_depend_on_arrival(tmp_path: Path) -> None:
    run(tmp_path, 4)
    first = list(JOBS)
    run(tmp_path / "again", 4)
    assert first == JOBS  # the same requests in the same order: the same digest on a resume
