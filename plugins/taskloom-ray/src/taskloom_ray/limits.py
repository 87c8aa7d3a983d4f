"""Rate limits kept by the whole cluster: one limiter actor per provider, endpoint, key and model.

An API's limit belongs to the account, and every worker of a run spends from it. So the driver
starts one small actor per distinct account and model whose limits the user set
(``requests_per_minute``, ``tokens_per_minute``), holding core's own token buckets at those
rates. Each worker's limiter then takes its requests and tokens from that actor in chunks of a
tenth of a second's worth (:meth:`taskloom.llms.limits.Limiter.share`), so the actor is asked a
few times a second per worker, not once per request, and the workers together stay under the
limit however the shards are spread over them. Limits that only the API's headers report are
learnt by each worker from its own answers, and each backs off on its own 429s.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from taskloom.plugin import HTTPLLM, Bucket, Pipeline, Task


class LimiterActor:
    """The cluster's buckets for one account and model (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.buckets = {
            which: Bucket(per_minute)
            for which, per_minute in (("requests", requests_per_minute), ("tokens", tokens_per_minute))
            if per_minute is not None
        }
        self.grants = 0

    def grant(self, which: str, amount: float) -> float:
        """Take ``amount`` from the ``which`` bucket; the seconds until it may be used."""
        self.grants += 1
        bucket = self.buckets.get(which)
        return bucket.reserve(amount, time.monotonic()) if bucket is not None else 0.0

    def granted(self) -> int:
        return self.grants


class RayAllowance:
    """A worker's side of a limiter actor: what core's limiter awaits for its chunks."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def grant(self, which: str, amount: float) -> float:
        delay: float = await self.actor.grant.remote(which, amount)
        return delay


def limited_llms(llm: Any) -> list[HTTPLLM]:
    """The HTTP LLMs with a rate limit set in ``llm``: itself, or the members of a fallback."""
    found = []
    for member in getattr(llm, "llms", None) or []:  # a fallback's members, each with its own limits
        found += limited_llms(member)
    if isinstance(llm, HTTPLLM) and (llm.requests_per_minute is not None or llm.tokens_per_minute is not None):
        found.append(llm)
    return found


def limit_group(llm: HTTPLLM) -> str:
    """Who shares one limit: the provider, endpoint, key (by a digest, never itself) and model."""
    key = llm.api_key.get_secret_value() if llm.api_key is not None else f"env:{llm.key_env or llm.api_key_env}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    identity = "|".join([f"{type(llm).__module__}.{type(llm).__qualname__}", llm.api_root(), digest, llm.model_name])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def shared_limits(pipeline: Pipeline) -> dict[str, tuple[float | None, float | None]]:
    """Each group of LLMs with limits set, and the limits it keeps: the lowest any of them set, as
    the LLMs of a local run that share one limiter keep."""
    groups: dict[str, tuple[float | None, float | None]] = {}
    for step in pipeline.steps.values():
        for llm in limited_llms(step.llm if isinstance(step, Task) else None):
            group = limit_group(llm)
            low_rpm, low_tpm = groups.get(group, (None, None))
            groups[group] = (
                _lowest(low_rpm, llm.requests_per_minute),
                _lowest(low_tpm, llm.tokens_per_minute),
            )
    return groups


def _lowest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)
