"""The shard worker: a Ray actor that runs whole shards with the local engine.

A worker holds the pipeline (its steps loaded once, when the actor starts), and runs each shard
handed to it as a local run of its own: the shard's rows through every step on an event loop of
its own, with taskloom's row recipe, retries, error rows and a SQLite cache in the shard's
folder, each answer committed as it arrives. Rows never travel between steps through Ray; only
the shard's range goes in and a small manifest comes back.

Shards run in the actor's threads (``shards_per_worker`` at once, the back-pressure); progress
and health calls have a thread of their own, so the driver can read a busy worker's counters.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Any

from taskloom.plugin import (
    BudgetExceededError,
    LocalExecutor,
    Pipeline,
    RunRequest,
    RunResult,
    RunStats,
    Sink,
    Source,
    Task,
    get_sink,
    get_source,
)
from taskloom_ray.budget import ShardBudget
from taskloom_ray.shards import Layout, Shard, ShardError, ShardSource, publish, write_json


class ShardWorker:
    """Runs shards of one pipeline into one run folder (wrapped by ``ray.remote`` at run time)."""

    def __init__(
        self,
        pipeline: Pipeline,
        root: str,
        marker: str,
        sinks: list[Sink],
        served: dict[str, tuple[Any, int]] | None = None,
        allowances: dict[str, Any] | None = None,
        budget: Any = None,
    ) -> None:
        if not Path(marker).exists():
            raise ShardError(
                f"This worker (host {socket.gethostname()}) cannot see the run folder {root!r}: the driver's "
                f"marker {marker} is not there. Every node must see the run folder at the same path: put it "
                "on a shared POSIX file system (NFS, say) and pass that path as the output."
            )
        self.pipeline = pipeline
        self.layout = Layout(Path(root))
        self.sinks = sinks
        self.live: dict[int, RunStats] = {}
        self.budget = budget
        """The run's budget actor, when it has a cap."""
        from taskloom_ray.limits import RayAllowance, limit_group, limited_llms
        from taskloom_ray.models import ServedLLM

        served, allowances = served or {}, allowances or {}
        for name, step in pipeline.steps.items():
            if isinstance(step, Task) and step.llm is not None and name in served:
                router, at_once = served[name]
                step.llm = ServedLLM.standing_in_for(step.llm, router, at_once)  # the model lives in its actors
            step.load()  # once per worker: each shard's run leaves a loaded step loaded
            for llm in limited_llms(step.llm if isinstance(step, Task) else None):
                if limit_group(llm) in allowances:
                    llm.limiter().share(RayAllowance(allowances[limit_group(llm)]))

    def run_shard(self, shard: Shard, source: Source, options: dict[str, Any]) -> dict[str, Any]:
        """Run one shard and publish its parts; its manifest (what it made and paid)."""
        started = time.time()
        own = copy.copy(self.pipeline)
        # Shards run at once share the loaded steps, but each counts its own rows (Step.for_part).
        own.graph = dataclasses.replace(own.graph, steps={n: s.for_part() for n, s in own.graph.steps.items()})
        own.sinks = [sink.model_copy(deep=True) for sink in self.sinks]  # a sink remembers its files
        budget_usd, max_requests = options.get("budget_usd"), options.get("max_requests")
        budget = ShardBudget(self.budget, budget_usd, max_requests) if self.budget is not None else None
        request = RunRequest(
            source=ShardSource(source=source, start=shard.start, stop=shard.stop),
            output=self.layout.shard_dir(shard),
            use_cache=options.get("use_cache", True),
            progress=lambda stats: self.live.__setitem__(shard.index, stats),
            progress_interval=float(options.get("progress_interval", 0.5)),
            budget_usd=budget_usd,
            max_requests=max_requests,
            card=False,  # the run's card is the driver's, over every shard
            budget=budget,
        )
        try:
            result = LocalExecutor().run(own, request)
        except BudgetExceededError as stop:  # the driver stops the run; the stats travel with the error
            if isinstance(stop.result, RunResult):
                stop.result = RunResult(stop.result.output_dir, stop.result.stats.portable(), stop.result.leaves)
            raise
        finally:
            self.live.pop(shard.index, None)
            if budget is not None:
                budget.settle()
        made: dict[str, list[Path]] = {}
        for sink in own.sinks:
            files = sink.result()
            if isinstance(files, Path) and len(result.leaves) == 1:
                made.setdefault(result.leaves[0], []).append(files)
            elif isinstance(files, dict):
                for leaf, path in files.items():
                    made.setdefault(str(leaf), []).append(Path(path))
        stats = result.stats
        manifest = {
            "shard": shard.index,
            "start": shard.start,
            "stop": shard.stop,
            "rows": {leaf: stats.steps[leaf].rows_out for leaf in result.leaves},
            "columns": {leaf: _columns(paths) for leaf, paths in made.items()},
            "requests": sum(s.requests for s in stats.steps.values()),
            "cached": sum(s.cached for s in stats.steps.values()),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "seconds": round(time.time() - started, 3),
            "stats": stats.as_dict(),
        }
        manifest["parts"] = publish(self.layout, shard, made)
        write_json(self.layout.manifest(shard), manifest)  # last: its presence means "finished"
        return {"manifest": manifest, "stats": stats.portable()}

    def progress(self) -> list[RunStats]:
        """The counters of the shards running now (copies that pickle)."""
        return [stats.portable() for stats in list(self.live.values())]

    def ping(self) -> int:
        """This worker's process id: alive, and which process it is."""
        return os.getpid()


def _columns(paths: list[Path]) -> list[str]:
    """The columns of a part's first row (its JSON Lines file's), for the manifest."""
    for path in paths:
        if path.suffix == ".jsonl":
            first = next(iter(get_source("jsonl", path=str(path)).rows()), None)
            return list(first) if first is not None else []
    return []


def shard_sinks(sinks: list[Sink]) -> list[Sink]:
    """The sinks each shard writes: the file-writing ones the pipeline has (JSON Lines if none).

    A sink that writes no file (a ``datasets.Dataset``, an upload) is fed at the end from the
    JSON Lines parts, so one is written whenever such a sink is there.
    """
    own = [sink for sink in sinks if sink.writes_files]
    if not own or (len(own) < len(sinks) and not any(sink.type_name() == "jsonl" for sink in own)):
        own.append(get_sink("jsonl"))
    return own
