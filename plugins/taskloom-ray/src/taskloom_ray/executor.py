"""The ``ray`` executor: a pipeline's rows cut into shards, each run whole by a worker actor.

Why it is shaped this way (distilabel's Ray pipeline is the reference, and each choice answers
one of its measured faults):

* **Rows never travel between steps through Ray.** The driver cuts the source into shards of
  ``shard_rows`` rows (row ranges) and hands each to a worker actor, which runs every step over
  it with the local engine. Only the range goes out and a small manifest comes back; there is no
  queue actor on the driver for every batch to pass through.
* **Each shard is resumable on its own.** A shard's local run keeps its SQLite cache in the
  shard's folder, committing each answer as it arrives, and publishes its part files by rename
  with a manifest written last. A rerun skips the shards with a manifest and runs the others
  from their caches, so it pays only for what was in flight when the run died. The Ray object
  store is never the cache: it dies with its owner.
* **Back-pressure is at most ``shards_per_worker`` shards in flight per worker**, each with its
  LLMs' own ``max_concurrency`` requests in flight.
* **A dead worker never hangs the run.** Workers restart (``max_restarts``); a shard whose worker
  died is handed to a live one, up to ``shard_retries`` times, then the run fails and names it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from taskloom.plugin import (
    BudgetExceededError,
    Pipeline,
    PipelineExecutor,
    RunFolder,
    RunInterrupted,
    RunRequest,
    RunResult,
    RunStats,
    Source,
    StepStats,
    Task,
    TaskloomError,
    get_sink,
)
from taskloom_ray.phases import PartsSource, Phase, plan_phases
from taskloom_ray.shards import DATA_DIR, Layout, Shard, ShardError, plan_shards, write_json
from taskloom_ray.worker import shard_sinks

if TYPE_CHECKING:
    from types import ModuleType

logger = logging.getLogger("taskloom.ray")


MODEL_START_TIMEOUT = 600.0
"""Seconds the model actors have to be placed and load their model."""


class RayNotAvailableError(TaskloomError):
    """Ray is not installed, or no cluster answers at the address given."""


class RayExecutor(PipelineExecutor):
    """Runs the rows on a Ray cluster: shards of the source, each run whole by a worker actor."""

    registry_name: ClassVar[str | None] = "ray"

    address: str | None = Field(
        default=None,
        description="The cluster to join: 'auto' (the one this machine is part of), HOST:PORT, or ray://HOST:PORT; "
        "none: the one RAY_ADDRESS names or `ray start` began here, else a local cluster for the run.",
    )
    workers: int | None = Field(
        default=None, ge=1, description="Worker actors; default: as many as the cluster's CPUs allow (num_cpus each)."
    )
    shard_rows: int = Field(default=500, ge=1, description="Source rows per shard: the unit of resume and of retry.")
    shards_per_worker: int = Field(
        default=2, ge=1, le=16, description="Shards a worker runs at once (the back-pressure)."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each worker reserves on its node.")
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources each worker reserves, e.g. {'accelerator': 1}."
    )
    max_restarts: int = Field(default=3, ge=0, description="Times Ray restarts a worker whose process died.")
    shard_retries: int = Field(
        default=3, ge=0, description="Times a shard whose worker died is run again elsewhere before the run fails."
    )
    model_actors: int = Field(
        default=1,
        ge=1,
        description="Copies of each local model (an LLM that runs on the machine), each loaded once in an actor "
        "of its own and shared by every worker.",
    )
    model_num_cpus: float = Field(default=1.0, ge=0, description="CPUs each model actor reserves.")
    model_num_gpus: float = Field(default=0.0, ge=0, description="GPUs each model actor reserves.")
    model_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources each model actor reserves, e.g. {'accelerator': 1}."
    )
    model_bundles: list[dict[str, float]] | None = Field(
        default=None,
        description="A placement group per model actor, packed on one node (a model split over several devices): "
        "its bundles, e.g. [{'GPU': 1}, {'GPU': 1}]; the actor itself takes the first.",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a cluster to answer.")
    start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds to wait for the workers to start: one still waiting for free resources then is "
        "given up (the run fails if none started).",
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None, description="Ray's runtime_env for the workers (working_dir, pip, env_vars) on a real cluster."
    )

    def run(self, pipeline: Pipeline, request: RunRequest) -> RunResult:
        ray = _import_ray()
        started_here = self._connect(ray)
        try:
            return _run_phases(self, ray, pipeline, request)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: ModuleType) -> bool:
        """Join (or start) the cluster; True if this call did, so the run also leaves it."""
        if ray.is_initialized():
            if self.address is not None or self.runtime_env is not None:
                logger.warning(
                    "Ray is already initialised in this process: the run uses that connection, and its own "
                    "address and runtime_env are not applied."
                )
            return False
        address = self.address
        if address and address != "auto" and not address.startswith("ray://"):
            _check_answers(address, self.connect_timeout)
        options: dict[str, Any] = {"logging_level": logging.WARNING, "runtime_env": self.runtime_env}
        if address is None:
            options["include_dashboard"] = False
        try:
            ray.init(address=address, **options)
        except ConnectionError as error:
            if address and address != "auto" and not address.startswith("ray://"):  # it answered on TCP
                raise RayNotAvailableError(
                    f"Something answers at {address}, but joining it as a Ray cluster failed ({error}). Check "
                    "that it is the head node's GCS port (`ray status` there), that this Ray is the cluster's "
                    "version, and, for a cluster with token authentication, that RAY_AUTH_MODE=token is set here "
                    "and the cluster's token is this machine's too."
                ) from None
            raise RayNotAvailableError(
                f"No Ray cluster found at address={address!r} ({error}). Start one with `ray start --head`, "
                "pass its HOST:PORT, or leave the address out to start a local cluster for the run."
            ) from None
        return True


def _run_phases(settings: RayExecutor, ray: ModuleType, pipeline: Pipeline, request: RunRequest) -> RunResult:
    """Every phase of ``pipeline`` in turn (one, unless a step needs all rows), then the run's record."""
    folder = RunFolder(request.output, pipeline.name, pipeline.signature())
    folder.claim()
    with folder.lock(), _RunActors(settings, ray, pipeline, request) as pools:
        phases = plan_phases(pipeline, request.output)
        overall = RunStats(steps=_blank_steps(pipeline))
        source: Source = request.source
        runs: list[_Run] = []
        for number, phase in enumerate(phases):
            last = number == len(phases) - 1
            root = phase.root or request.output
            run = _Run(settings, ray, phase, request.but(source=source, output=root), overall, last=last, pools=pools)
            run.execute()
            runs.append(run)
            for name, step in run.stats.steps.items():
                overall.steps[name].add(step)
            if run.stopped is not None:
                _stop_at_budget(pipeline, folder, request, overall, runs, run.stopped, complete=last)
            if not last:
                source = PartsSource(folder=str((root / DATA_DIR / phase.leaf).resolve()))
        _close(overall, runs, complete=True)
        result = runs[-1].result(overall)
        layout = Layout(request.output)
        write_json(layout.success, {"phases": len(phases), "rows": overall.total, "leaves": pipeline.graph.leaves})
        pipeline.record_run(folder, overall, request)
        for sink in pipeline.sinks:
            if not sink.writes_files:
                sink.finish(folder.data_dir)
    return result


def _close(overall: RunStats, runs: list[_Run], *, complete: bool) -> None:
    """The run's own counters from its phases': rows read by the first, written by the last."""
    overall.read, overall.total = runs[0].stats.read, runs[0].stats.total
    overall.done = runs[-1].stats.done if complete else 0
    overall.finished = time.monotonic()


def _stop_at_budget(
    pipeline: Pipeline,
    folder: RunFolder,
    request: RunRequest,
    overall: RunStats,
    runs: list[_Run],
    stop: BudgetExceededError,
    *,
    complete: bool,
) -> None:
    """End a run whose cap was reached: its record written, what was published kept, the error raised.

    ``complete`` says whether the phase that stopped was the last: only then are its rows the run's.
    """
    why = getattr(getattr(stop, "result", None), "stats", None)
    overall.stopping = getattr(why, "stopping", None) or "budget"
    _close(overall, runs, complete=complete)
    pipeline.record_run(folder, overall, request)
    result = runs[-1].result(overall) if overall.done else RunResult(folder.data_dir, overall, pipeline.graph.leaves)
    if overall.stopping == "max_requests":
        why_text, more = f"Stopped at max_requests={request.max_requests}", "a larger max_requests"
    else:
        why_text = f"Stopped at the budget of ${request.budget_usd:g} (spent {overall.cost_text()})"
        more = "a larger budget"
    raise BudgetExceededError(
        f"{why_text}: the shards finished are published in {request.output}, the others hold what they were "
        f"paid for in their caches; run the same command again with {more} to resume (nothing already answered "
        "is paid for again).",
        result,
    )


class _RunActors:
    """The actors every phase of a run shares: ``model_actors`` per local LLM behind a router, and a
    limiter actor per account and model with limits set."""

    def __init__(
        self, settings: RayExecutor, ray: ModuleType, pipeline: Pipeline, request: RunRequest | None = None
    ) -> None:
        self.settings = settings
        self.ray = ray
        self.pipeline = pipeline
        self.request = request
        self.budget: Any = None
        """The budget actor, when the run has a ``budget_usd`` or ``max_requests``."""
        self.served: dict[str, tuple[Any, int]] = {}
        """Step name -> (its model's router, calls a worker keeps in flight to it)."""
        self.allowances: dict[str, Any] = {}
        """Group of LLMs sharing a limit (:func:`limit_group`) -> its limiter actor."""
        self.actors: list[Any] = []
        self.groups: list[Any] = []
        self.reserved: dict[str, float] = {}

    def __enter__(self) -> _RunActors:
        from taskloom_ray.limits import LimiterActor, shared_limits
        from taskloom_ray.models import ModelActor, ModelRouter

        ray, settings = self.ray, self.settings
        request = self.request
        if request is not None and (request.budget_usd is not None or request.max_requests is not None):
            from taskloom_ray.budget import BudgetActor

            self.budget = ray.remote(BudgetActor).options(num_cpus=0).remote(request.budget_usd, request.max_requests)
            self.actors.append(self.budget)
        for group, (rpm, tpm) in shared_limits(self.pipeline).items():
            self.allowances[group] = ray.remote(LimiterActor).options(num_cpus=0).remote(rpm, tpm)
            self.actors.append(self.allowances[group])
        local = {
            name: step
            for name, step in self.pipeline.steps.items()
            if isinstance(step, Task) and step.llm is not None and step.llm.runs_locally
        }
        if not local:
            return self
        try:
            each = {"CPU": settings.model_num_cpus, "GPU": settings.model_num_gpus, **settings.model_resources}
            wanted = {key: value * settings.model_actors * len(local) for key, value in each.items() if value}
            have = ray.cluster_resources()
            for resource, amount in wanted.items():
                if float(have.get(resource, 0)) < amount:
                    raise ShardError(
                        f"{settings.model_actors} model actor(s) for each of {sorted(local)} need {amount:g} "
                        f"{resource} and the cluster has {float(have.get(resource, 0)):g}: lower model_actors or "
                        "what each reserves (model_num_cpus, model_num_gpus, model_resources), or add nodes."
                    )
            self.reserved = wanted
            for name, step in local.items():
                assert step.llm is not None
                actors = [self._actor(ModelActor, step.llm) for _ in range(settings.model_actors)]
                self.actors += actors
                try:
                    ray.get([actor.where.remote() for actor in actors], timeout=MODEL_START_TIMEOUT)  # loaded?
                except ray.exceptions.GetTimeoutError:
                    raise ShardError(
                        f"Step {name!r}: its {settings.model_actors} model actor(s) were not up after "
                        f"{MODEL_START_TIMEOUT:g} s: the cluster has no free resources for them (`ray status` shows "
                        "what is free), or the model takes longer to load."
                    ) from None
                except ray.exceptions.RayActorError as error:
                    raise ShardError(
                        f"Step {name!r}: its model {step.llm.model_name!r} failed to load in a model actor: {error}"
                    ) from None
                router = ray.remote(ModelRouter).options(num_cpus=0, max_concurrency=10_000).remote(actors)
                self.actors.append(router)
                self.served[name] = (router, step.llm.requests_at_once() * len(actors))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _actor(self, cls: type, llm: Any) -> Any:
        ray, settings = self.ray, self.settings
        options: dict[str, Any] = {
            "num_cpus": settings.model_num_cpus,
            "num_gpus": settings.model_num_gpus,
            "resources": settings.model_resources or None,
            "max_restarts": settings.max_restarts,
            "max_concurrency": max(1, llm.requests_at_once()),
        }
        if settings.model_bundles:
            from ray.util.placement_group import placement_group
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            group = placement_group(settings.model_bundles, strategy="STRICT_PACK")
            self.groups.append(group)
            if not group.wait(timeout_seconds=60):
                raise ShardError(
                    f"No node of the cluster can hold the model bundles {settings.model_bundles} together; "
                    "lower model_bundles or add a node that has them."
                )
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
        return ray.remote(cls).options(**options).remote(llm)

    def left(self) -> dict[str, float]:
        """The cluster's resources less what the model actors hold: what the workers may take."""
        total = {key: float(value) for key, value in self.ray.cluster_resources().items()}
        for key, value in self.reserved.items():
            total[key] = total.get(key, 0.0) - value
        return total

    def __exit__(self, *exc: object) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        for group in self.groups:
            with contextlib.suppress(Exception):
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(group)
        self.actors, self.groups = [], []


def _blank_steps(pipeline: Pipeline) -> dict[str, StepStats]:
    return {name: StepStats(name=name, is_task=isinstance(step, Task)) for name, step in pipeline.steps.items()}


class _Run:
    """One phase on the cluster: the driver's bookkeeping, from its first shard to its last."""

    def __init__(
        self,
        settings: RayExecutor,
        ray: ModuleType,
        phase: Phase,
        request: RunRequest,
        before: RunStats,
        *,
        last: bool,
        pools: _RunActors,
    ) -> None:
        self.settings = settings
        self.ray = ray
        self.phase = phase
        self.pipeline = phase.pipeline
        self.request = request
        self.before = before
        """The phases run before this one, for the progress display."""
        self.last = last
        self.pools = pools
        self.layout = Layout(request.output)
        self.stats = RunStats(steps=_blank_steps(self.pipeline))
        self.sinks = shard_sinks(list(self.pipeline.sinks)) if last else [get_sink("jsonl")]
        self.workers: list[Any] = []
        self.stopped: BudgetExceededError | None = None
        """The first shard's stop at the run's budget, if one stopped there."""
        self.travelling: Any = None
        self.attempts: dict[int, int] = {}

    def execute(self) -> None:
        """Run every shard of this phase that no earlier run published."""
        total = _count(self.request.source)
        self.stats.total = total
        size = max(1, total) if self.phase.whole else self.settings.shard_rows
        shards = plan_shards(total, size)
        self._check_same_cut(shards)
        todo: deque[Shard] = deque()
        for shard in shards:
            manifest = self.layout.finished(shard) if self.request.use_cache else None
            if manifest is None or _failed_rows(manifest):  # failed rows are asked again, as locally
                todo.append(shard)
            else:
                self.stats.add(_finished_before(manifest, self.stats))
        if todo:
            self._check_picklable()
            marker = self._marker()
            try:
                self._run_shards(todo, self.sinks, marker)
            finally:
                with contextlib.suppress(OSError):
                    marker.unlink()
        self.stats.finished = time.monotonic()
        if not self.last and self.stopped is None:
            write_json(self.layout.success, {"shards": len(shards), "rows": total})

    # -- setting up ---------------------------------------------------------------------------

    def _check_same_cut(self, shards: list[Shard]) -> None:
        """Refuse a rerun that would cut the rows differently: old parts would stay beside new ones."""
        planned = {(shard.index, shard.start, shard.stop) for shard in shards}
        for path in sorted(self.layout.data.glob("_manifests/part-*.json")):
            data = self.layout.read_manifest(path)
            if data is None or (data.get("shard"), data.get("start"), data.get("stop")) in planned:
                continue
            raise ShardError(
                f"{self.layout.root} holds shard {data.get('shard')} of an earlier run (rows {data.get('start')}-"
                f"{int(data.get('stop', 0)) - 1}), which this run would cut differently (shard_rows="
                f"{self.settings.shard_rows}, {len(shards)} shards of {shards[-1].stop if shards else 0} rows). "
                "Rerun with the earlier shard_rows and the same source, or write to another output folder."
            )

    def _check_picklable(self) -> None:
        """Name the step (or source) that cannot travel to a worker, before any worker starts."""
        dumps = self.ray.cloudpickle.dumps
        for name, step in self.pipeline.steps.items():
            try:
                dumps(step)
            except Exception as error:
                raise ShardError(
                    f"Step {name!r} cannot be sent to Ray workers: it does not pickle ({type(error).__name__}: "
                    f"{error}). Keep clients and open files out of its fields (create them in load()), or run "
                    "it with the local executor."
                ) from None
        try:
            dumps(self.request.source)
        except Exception as error:
            raise ShardError(
                f"The source {self.request.source.describe()} cannot be sent to Ray workers ({error})."
            ) from None

    def _marker(self) -> Path:
        """A file only this driver wrote: a worker that cannot see it is not looking at the same folder."""
        self.layout.shards.mkdir(parents=True, exist_ok=True)
        marker = self.layout.shards / f".driver-{uuid.uuid4().hex}"
        marker.write_text(socket.gethostname(), encoding="utf-8")
        return marker.resolve()

    def _worker_count(self, shards: int) -> int:
        settings = self.settings
        available = self.pools.left()
        if settings.workers is not None:
            wanted = settings.workers
        else:
            cpus = float(available.get("CPU", 1))
            wanted = max(1, int(cpus // settings.num_cpus)) if settings.num_cpus else 1
        needed = max(1, -(-shards // settings.shards_per_worker))  # no worker would be left idle
        count = min(wanted, needed)
        for resource, each in {"CPU": settings.num_cpus, **settings.resources}.items():
            have = float(available.get(resource, 0))
            if each and have < each * count:
                raise ShardError(
                    f"{count} Ray workers need {each * count:g} {resource} and the cluster has {have:g}"
                    f"{' beside the model actors' if self.pools.served else ''}: lower "
                    f"workers (or num_cpus / resources per worker), or add nodes. Without this check the workers "
                    "would wait for resources forever."
                )
        return count

    def _new_worker(self, own_sinks: list[Any], marker: Path) -> Any:
        from taskloom_ray.worker import ShardWorker

        settings = self.settings
        actor = self.ray.remote(concurrency_groups={"control": 1})(ShardWorker).options(
            num_cpus=settings.num_cpus,
            resources=settings.resources or None,
            max_restarts=settings.max_restarts,
            max_task_retries=0,  # a shard is retried by the driver, on whichever worker is free
            max_concurrency=settings.shards_per_worker,
        )
        steps = self.pipeline.steps
        served = {name: self.pools.served[name] for name in steps if name in self.pools.served}
        root = str(self.layout.root.resolve())
        return actor.remote(
            self._travelling(), root, str(marker), own_sinks, served, self.pools.allowances, self.pools.budget
        )

    def _travelling(self) -> Any:
        """The pipeline as the workers get it: without its source (each shard gets its own range of
        it), in the object store once for every worker rather than copied into each."""
        if self.travelling is None:
            bare = copy.copy(self.pipeline)
            bare.source = None
            self.travelling = self.ray.put(bare)
        return self.travelling

    # -- running ------------------------------------------------------------------------------

    def _run_shards(self, todo: deque[Shard], own_sinks: list[Any], marker: Path) -> None:
        ray = self.ray
        source_ref = ray.put(self.request.source)
        options = {
            "use_cache": self.request.use_cache,
            "progress_interval": self.request.progress_interval,
            "budget_usd": self.request.budget_usd,
            "max_requests": self.request.max_requests,
        }
        self.workers = [self._new_worker(own_sinks, marker) for _ in range(self._worker_count(len(todo)))]
        self._await_workers()
        busy: dict[int, int] = dict.fromkeys(range(len(self.workers)), 0)
        pending: dict[Any, tuple[Shard, int]] = {}
        last_tick = 0.0
        try:
            while todo or pending:
                for index in range(len(self.workers)):
                    while todo and busy[index] < self.settings.shards_per_worker:
                        shard = todo.popleft()
                        ref = self.workers[index].run_shard.remote(shard, source_ref, options)
                        pending[ref] = (shard, index)
                        busy[index] += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.request.progress_interval)
                for ref in ready:
                    shard, index = pending.pop(ref)
                    busy[index] -= 1
                    self._collect(ref, shard, index, todo, own_sinks, marker)
                if self.request.progress is not None and time.monotonic() - last_tick >= self.request.progress_interval:
                    last_tick = time.monotonic()
                    self.request.progress(self._live())
        except KeyboardInterrupt:
            self._stop_workers()
            self.stats.finished = time.monotonic()
            done = sum(1 for _ in self.layout.data.glob("_manifests/part-*.json"))
            raise RunInterrupted(
                f"Interrupted: {done} shards finished and published in {self.layout.root}; run the same command "
                "again to resume (finished shards are skipped, the others resume from their caches).",
                None,
            ) from None
        except BaseException:
            self._stop_workers()
            raise
        self._stop_workers()
        if self.request.progress is not None:
            self.request.progress(self.stats)

    def _collect(
        self, ref: Any, shard: Shard, index: int, todo: deque[Shard], own_sinks: list[Any], marker: Path
    ) -> None:
        """One shard's outcome: counted, or handed back to the queue if its worker died."""
        ray = self.ray
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the shard itself raised: a bug or bad data, not luck
            cause = error.as_instanceof_cause()
            if isinstance(cause, BudgetExceededError):  # the run's cap: no new shard, the running ones stop too
                self.stopped = self.stopped or cause
                made = getattr(cause, "result", None)
                if isinstance(made, RunResult):
                    self.stats.add(made.stats)
                todo.clear()
                return
            raise ShardError(f"{shard} failed: {type(cause).__name__}: {cause}") from cause
        except (
            ray.exceptions.RayActorError,
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.ObjectLostError,
        ) as error:
            tries = self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
            if tries > self.settings.shard_retries:
                raise ShardError(
                    f"{shard} lost its worker {tries} times (last: {type(error).__name__}: {error}); giving up. "
                    "What it finished is in its cache: run the same command again to resume it."
                ) from None
            logger.warning("%s: its worker died (%s); running it again (try %d)", shard, type(error).__name__, tries)
            todo.appendleft(shard)
            self._revive(index, own_sinks, marker)
            return
        self.stats.add(outcome["stats"])

    def _await_workers(self) -> None:
        """Wait for the workers to start: one that failed to is the run's error, at once (not a
        worker to restart); one the cluster has no room for within ``start_timeout`` is dropped."""
        ray = self.ray
        pings = {worker.ping.options(concurrency_group="control").remote(): worker for worker in self.workers}
        ready, waiting = ray.wait(list(pings), num_returns=len(pings), timeout=self.settings.start_timeout)
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as error:
                self._stop_workers()
                raise ShardError(f"A Ray worker could not start: {_cause(error)}") from None
        if not ready:
            self._stop_workers()
            extra = f" and {self.settings.resources}" if self.settings.resources else ""
            raise ShardError(
                f"No Ray worker started within {self.settings.start_timeout:g} s: the cluster has no free "
                f"{self.settings.num_cpus:g} CPU{extra} for one (other jobs hold them; `ray status` shows what "
                "is free). Free some, lower num_cpus, or raise start_timeout."
            )
        for ref in waiting:
            with contextlib.suppress(Exception):
                ray.kill(pings[ref], no_restart=True)
        if waiting:
            logger.warning(
                "%d of %d Ray workers found no free resources; running on %d", len(waiting), len(pings), len(ready)
            )
        self.workers = [pings[ref] for ref in ready]

    def _revive(self, index: int, own_sinks: list[Any], marker: Path) -> None:
        """Keep worker ``index`` if Ray restarted it; replace it if it is gone for good."""
        ray = self.ray
        try:
            ray.get(self.workers[index].ping.options(concurrency_group="control").remote(), timeout=120)
        except Exception:
            with contextlib.suppress(Exception):
                ray.kill(self.workers[index], no_restart=True)
            self.workers[index] = self._new_worker(own_sinks, marker)

    def _live(self) -> RunStats:
        """The finished shards' counters plus those of the shards running now."""
        view = RunStats(steps={name: StepStats(name=name, is_task=s.is_task) for name, s in self.before.steps.items()})
        view.started, view.total = self.before.started, self.stats.total
        for name, step in self.before.steps.items():
            view.steps[name].add(step)
        view.add(self.stats)
        calls = [worker.progress.options(concurrency_group="control").remote() for worker in self.workers]
        with contextlib.suppress(Exception):  # a worker being restarted shows up on the next tick
            for running in self.ray.get(calls, timeout=2):
                for stats in running:
                    view.add(stats)
        return view

    def _stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(worker, no_restart=True)
        self.workers = []

    # -- the result ---------------------------------------------------------------------------

    def result(self, stats: RunStats) -> RunResult:
        """The last phase's outputs as the run's result; the sinks that write no file are fed now."""
        leaves = self.pipeline.graph.leaves
        result = RunResult(self.layout.root, stats, leaves)
        if any(sink.type_name() == "jsonl" for sink in self.sinks):
            result.files = {leaf: self.layout.data / leaf for leaf in leaves}
        for sink in self.sinks:
            result.sinks[sink.type_name()] = {leaf: self.layout.data / leaf for leaf in leaves}
        for sink in self.pipeline.sinks:
            if sink.writes_files:
                continue
            for leaf in leaves:  # fed the published rows, in order, a part at a time
                writer = sink.open(self.layout.root, leaf)
                try:
                    for rows in _chunks(result.rows(leaf), 1000):
                        writer.write(rows)
                finally:
                    writer.close()
            result.sinks[sink.type_name()] = sink.result()
        return result


def _cause(error: Exception) -> str:
    """What a dead actor's error says went wrong in it: its last line that names an exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "Error:" in line or "Exception:" in line]
    return (named[-1] if named else lines[-1] if lines else type(error).__name__)[:1000]


def _chunks(rows: Any, size: int) -> Any:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _failed_rows(manifest: dict[str, Any]) -> int:
    steps = manifest.get("stats", {}).get("steps", {})
    return sum(int(step.get("rows_failed", 0)) for step in steps.values() if isinstance(step, dict))


def _finished_before(manifest: dict[str, Any], shape: RunStats) -> RunStats:
    """A shard finished by an earlier run, as this run's counters: its rows, none of its requests."""
    done = RunStats(steps={})
    steps = manifest.get("stats", {}).get("steps", {})
    for name in shape.steps:
        recorded = steps.get(name, {})
        done.steps[name] = StepStats(
            name=name,
            is_task=shape.steps[name].is_task,
            rows_in=int(recorded.get("rows_in", 0)),
            rows_out=int(recorded.get("rows_out", 0)),
            rows_failed=int(recorded.get("rows_failed", 0)),
            cached=int(recorded.get("requests", 0)) + int(recorded.get("cached", 0)),
            model=recorded.get("model"),
            measured=recorded.get("measured"),  # a whole-row measure (one shard) is kept as it was
            dropped=dict(recorded.get("rows_dropped", {})),
        )
    done.read = int(manifest.get("stop", 0)) - int(manifest.get("start", 0))
    done.done = done.read
    return done


def _count(source: Source) -> int:
    """How many rows the source has: its own count, else one pass over it (a line count)."""
    known = source.count()
    if known is not None:
        return known
    return sum(1 for _ in source.rows())


def _check_answers(address: str, timeout: float) -> None:
    """Fail within seconds, not minutes, when nothing listens at ``HOST:PORT``."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayNotAvailableError(
            f"address={address!r} is not HOST:PORT, 'auto' or ray://HOST:PORT (for example 10.0.0.5:6379)."
        )
    try:
        with socket.create_connection((host, int(port)), timeout=min(timeout, 5.0)):
            pass
    except OSError as error:
        raise RayNotAvailableError(
            f"No Ray cluster answers at {address} ({error}). Check the head node's address and port "
            "(`ray status` on it), or leave the address out to start a local cluster for the run."
        ) from None


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RayNotAvailableError(
            "The ray executor needs Ray, which is not installed here: pip install taskloom-ray (or pip install ray)."
        ) from None
    return ray
