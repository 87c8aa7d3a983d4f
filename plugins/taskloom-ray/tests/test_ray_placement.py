"""Model actors placed by their declared resources, on a simulated three-node cluster.

Simulated: ``ray.cluster_utils.Cluster`` starts three Ray nodes (raylets) on this one machine,
each declaring one unit of a made-up ``fake_gpu`` resource. Ray schedules across them as it
would across hosts, so one model actor per fake GPU must land one on each node; what is not
simulated is real accelerators and separate file systems.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from taskloom_ray.executor import _RunActors  # noqa: E402
from taskloom_ray.shards import ShardError  # noqa: E402

from taskloom import Pipeline, get_llm, get_task  # noqa: E402
from taskloom.registry import get_executor  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def three_nodes() -> Iterator[Any]:
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"fake_gpu": 1}, "include_dashboard": False}
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, resources={"fake_gpu": 1})
        ray.init(address=cluster.address, logging_level="WARNING")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def local_model() -> Pipeline:
    llm = get_llm("llamacpp", generation_kwargs={"max_new_tokens": 4, "temperature": 0})
    return Pipeline(get_task("text-generation", name="answer", llm=llm), source=[{"instruction": "Hi"}], name="m")


def test_one_model_actor_per_fake_gpu_lands_one_on_each_node(three_nodes: Any) -> None:
    settings = get_executor("ray", model_actors=3, model_num_cpus=0, model_resources={"fake_gpu": 1})
    with _RunActors(settings, ray, local_model()) as pools:  # type: ignore[arg-type]
        models = pools.actors[:-1]  # the last one is their router
        placed = ray.get([actor.where.remote() for actor in models], timeout=120)
    assert len({where["node"] for where in placed}) == 3
    assert all(where["resources"].get("fake_gpu") == 1 for where in placed)
    assert len({node["NodeID"] for node in ray.nodes() if node["Alive"]}) == 3


def test_more_model_actors_than_fake_gpus_is_refused_not_left_waiting(three_nodes: Any) -> None:
    settings = get_executor("ray", model_actors=4, model_num_cpus=0, model_resources={"fake_gpu": 1})
    with pytest.raises(ShardError, match=r"need 4 fake_gpu and the cluster has 3"):
        _RunActors(settings, ray, local_model()).__enter__()  # type: ignore[arg-type]
