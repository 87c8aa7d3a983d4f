"""Anthropic's Message Batches API: all the requests of one ``generate()`` call as one batch.

A module apart from the LLM because a batch is not a chat request: it is submitted once, polled
for minutes to hours, and read back as a JSONL file, none of which goes through the live path's
rate limiter or its per-request retries. Every call still goes through the HTTP base's
``request`` (key header, redaction, status codes as core's errors) and ``retrying`` (backoff on
429/529/5xx), so what a failure looks like does not depend on the mode.

Resuming a batch by id needs a check that it was submitted for the requests at hand: collecting
another run's batch would put its answers on the wrong rows. The Message Batches API keeps no
metadata of ours, so the check is carried by what it does keep:

* each request's ``custom_id`` is ``i<input>-g<generation>-<digest>``, the digest being the
  first 16 hex digits of the sha256 of the request's ``params`` as canonical JSON. The result
  lines name their custom ids, so a batch holding any id this call would not send (another
  input, model, option or position) is refused when it is collected;
* the batch object counts its requests (``request_counts``), so a batch of another size is
  refused at the first poll, before any waiting.

A batch of as many requests with other contents is therefore only recognised once it has
ended, since its results are the one place the API lists its custom ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from taskloom.plugin import (
    BadRequestError,
    ChatType,
    GenerateOutput,
    GenerationError,
    GenerationOptions,
    OverloadedError,
    RateLimitError,
    Reply,
    RequestTimeoutError,
    RetryableError,
    ServerError,
    TaskloomError,
)

if TYPE_CHECKING:
    from taskloom_anthropic.llm import AnthropicLLM

logger = logging.getLogger("taskloom.anthropic")

BATCHES_PATH: Final = "/v1/messages/batches"
MAX_REQUESTS: Final = 100_000
"""The most requests one Message Batch takes (the API's documented limit)."""
DIGEST_CHARS: Final = 16
"""Hex digits of a request's digest kept in its custom id: 64 bits, short enough for the id's 64 characters."""
COUNTED: Final = ("processing", "succeeded", "errored", "canceled", "expired")
"""The ``request_counts`` of a batch, which together count every request it holds."""

# What an errored line's error type says about its cause, as core's error classes (for the row).
_ERRORED_AS: Final[dict[str, type[GenerationError]]] = {
    "rate_limit_error": RateLimitError,
    "overloaded_error": OverloadedError,
    "api_error": ServerError,
    "timeout_error": RequestTimeoutError,
}


class BatchMismatchError(TaskloomError, ValueError):
    """A ``batch_id`` to resume that was submitted for other requests than the ones given."""


@dataclass(frozen=True)
class BatchRequest:
    """One request of a batch: which generation of which input it asks for, and what it sends."""

    custom_id: str
    input: int
    generation: int
    params: dict[str, Any]


def params_digest(params: dict[str, Any]) -> str:
    """A short digest of a request's params as canonical JSON, for its custom id (see the module)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def custom_id(input: int, generation: int, digest: str) -> str:
    """The id a request is submitted under: its position, and the digest of what it asks."""
    return f"i{input}-g{generation}-{digest}"


def plan(
    llm: AnthropicLLM, inputs: list[ChatType], num_generations: int, options: GenerationOptions
) -> list[BatchRequest]:
    """One request per generation of every input, each exactly the body a live request would send."""
    requests = []
    for index, chat in enumerate(inputs):
        params = llm.body(chat, options, 1)
        digest = params_digest(params)
        for generation in range(num_generations):
            requests.append(BatchRequest(custom_id(index, generation, digest), index, generation, params))
    return requests


async def run_batch(
    llm: AnthropicLLM, inputs: list[ChatType], num_generations: int, options: GenerationOptions
) -> list[GenerateOutput]:
    """Submit (or resume ``llm.batch_id``), wait for the batch to end, and read its results in input order."""
    if not inputs:
        return []
    requests = plan(llm, inputs, num_generations, options)
    if len(requests) > MAX_REQUESTS:
        raise BadRequestError(
            f"{llm.where()}: a Message Batch takes at most {MAX_REQUESTS} requests, and this call makes "
            f"{len(requests)} ({len(inputs)} inputs x {num_generations} generations); call generate() "
            "with fewer inputs at a time."
        )
    batch_id = llm.batch_id or await _submit(llm, requests)
    batch = await _wait(llm, batch_id, len(requests))
    results = await _results(llm, batch_id, batch)
    outputs = _outputs(llm, batch_id, requests, results, len(inputs), num_generations, options)
    llm.batch_id = None  # collected: the next call submits a new batch
    return outputs


async def _submit(llm: AnthropicLLM, requests: list[BatchRequest]) -> str:
    """Create the batch; retried only when the server answered with an error status.

    A timeout or a dropped connection leaves open whether the batch was created, and a blind
    retry could pay for every request twice, so that failure is reported for the rows instead.
    """
    body = {"requests": [{"custom_id": r.custom_id, "params": r.params} for r in requests]}

    async def attempt() -> Any:
        try:
            created = await llm.request("POST", BATCHES_PATH, body)
        except RetryableError as error:
            if error.status is None:
                raise GenerationError(
                    f"{error} The Message Batch may have been created anyway: list your batches "
                    f"(GET {BATCHES_PATH}) and resume one with batch_id=... rather than paying twice."
                ) from None
            raise
        if not isinstance(created, dict) or not isinstance(created.get("id"), str) or not created["id"]:
            raise GenerationError(
                f"{llm.where()} answered a batch submission without a batch id: {llm.redact(json.dumps(created)[:300])}"
            )
        return created

    created = await llm.retrying(attempt)
    batch_id = str(created["id"])
    llm.batch_id = batch_id
    logger.warning(
        "Submitted Anthropic Message Batch %s (%d requests); if this run stops, resume with batch_id=%r.",
        batch_id,
        len(requests),
        batch_id,
    )
    return batch_id


async def _wait(llm: AnthropicLLM, batch_id: str, expected: int) -> dict[str, Any]:
    """Poll every ``batch_poll_interval`` seconds until the batch has ended; ``canceling`` is not yet ended."""
    path = f"{BATCHES_PATH}/{quote(batch_id, safe='')}"

    async def attempt() -> dict[str, Any]:
        try:
            batch = await llm.request("GET", path)
        except BadRequestError as error:  # most likely a 404: say which field to change
            raise BadRequestError(f"{error} (batch_id={batch_id!r}; unset it to submit a new batch)") from None
        if not isinstance(batch, dict) or not isinstance(batch.get("processing_status"), str):
            raise ServerError(
                f"{llm.where()} answered a batch status without a processing_status: "
                f"{llm.redact(json.dumps(batch)[:300])}"
            )
        return batch

    while True:
        batch = await llm.retrying(attempt)
        held = _request_total(batch)
        if held is not None and held != expected:
            raise BatchMismatchError(
                f"Anthropic Message Batch {batch_id} holds {held} requests, and this call makes {expected} "
                "(other inputs or num_generations); unset batch_id to submit a new batch."
            )
        status = batch["processing_status"]
        if status == "ended":
            logger.info("Anthropic Message Batch %s ended: %s", batch_id, batch.get("request_counts"))
            return batch
        logger.info("Anthropic Message Batch %s is %s: %s", batch_id, status, batch.get("request_counts"))
        await asyncio.sleep(llm.batch_poll_interval)


def _request_total(batch: dict[str, Any]) -> int | None:
    """How many requests the batch holds, or None when its counts are missing or malformed."""
    counts = batch.get("request_counts")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(name), int) for name in COUNTED):
        return None
    return sum(int(counts[name]) for name in COUNTED)


def _results_location(llm: AnthropicLLM, batch_id: str, batch: dict[str, Any]) -> str:
    """The batch's ``results_url`` when it is on the API root's host, else the documented path under the root.

    Every request of the session carries the key, so a results URL on another host (a proxy in
    front, a server that echoes something odd) would be handed the key; the path under our own
    root serves the same file.
    """
    url = batch.get("results_url")
    if isinstance(url, str) and url:
        here, there = urlsplit(llm.api_root()), urlsplit(url)
        if (there.scheme, there.netloc) == (here.scheme, here.netloc):
            return url
        logger.debug("Anthropic Message Batch %s: results_url is on another host; using the API root", batch_id)
    return f"{BATCHES_PATH}/{quote(batch_id, safe='')}/results"


async def _results(llm: AnthropicLLM, batch_id: str, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The result of each custom id in the batch's JSONL file; a file that does not parse is fetched again."""
    location = _results_location(llm, batch_id, batch)

    async def attempt() -> dict[str, dict[str, Any]]:
        raw = await llm.request("GET", location, decode=False)
        found: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("custom_id"), str)
                or not isinstance(record.get("result"), dict)
            ):
                raise ServerError(
                    f"{llm.where()}: line {number} of Message Batch {batch_id}'s results is not a result: "
                    f"{llm.redact(line[:300])}"
                )
            found[record["custom_id"]] = record["result"]
        return found

    results: dict[str, dict[str, Any]] = await llm.retrying(attempt)
    return results


def _outputs(
    llm: AnthropicLLM,
    batch_id: str,
    requests: list[BatchRequest],
    results: dict[str, dict[str, Any]],
    num_inputs: int,
    num_generations: int,
    options: GenerationOptions,
) -> list[GenerateOutput]:
    """One output per input, built by the base's rule for live requests (a failed generation keeps its error)."""
    expected = {r.custom_id for r in requests}
    foreign = sorted(cid for cid in results if cid not in expected)
    if foreign:
        raise BatchMismatchError(
            f"Anthropic Message Batch {batch_id} was submitted for other requests than these (different inputs, "
            f"model or generation options: it holds {len(foreign)} this call would not send, e.g. "
            f"{foreign[0]!r}); unset batch_id to submit a new batch."
        )
    replies: list[list[Reply | GenerationError]] = [[] for _ in range(num_inputs)]
    for request in requests:  # input-major, generation-minor: the order of the generations
        replies[request.input].append(_reply(llm, batch_id, results.get(request.custom_id), options))
    sizes = [1] * num_generations
    return [llm._output(one, sizes, num_generations) for one in replies]


def _reply(
    llm: AnthropicLLM, batch_id: str, result: dict[str, Any] | None, options: GenerationOptions
) -> Reply | GenerationError:
    """One result line as a reply, or as the error its generation records."""
    where = f"Anthropic Message Batch {batch_id}"
    if result is None:
        return ServerError(f"{where} has no result for this request")
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        try:
            return llm.parse(message, options)
        except (KeyError, TypeError, IndexError, ValueError) as error:
            detail = llm.redact(f"{type(error).__name__}: {error}; {json.dumps(message)[:300]}")
            return ServerError(f"{where} holds a result it does not recognise: {detail}")
    if kind == "errored":
        return _errored(llm, where, result.get("error"))
    if kind == "canceled":
        return GenerationError(f"{where} was canceled before this request was processed")
    if kind == "expired":
        return RequestTimeoutError(f"{where} expired (24 h after submission) before this request was processed")
    return ServerError(f"{where} holds a result of unknown type {llm.redact(json.dumps(kind))}")


def _errored(llm: AnthropicLLM, where: str, error: Any) -> GenerationError:
    """An errored line's error, ``{"type": "error", "error": {"type", "message"}}`` or its inner part alone."""
    inner = error.get("error") if isinstance(error, dict) and isinstance(error.get("error"), dict) else error
    kind = inner.get("type") if isinstance(inner, dict) else None
    detail = llm.error_detail({"error": inner}) if isinstance(inner, dict) else None
    text = llm.redact(detail or json.dumps(error)[:300])
    return _ERRORED_AS.get(kind if isinstance(kind, str) else "", BadRequestError)(f"{where}: {text}")


__all__ = [
    "BATCHES_PATH",
    "MAX_REQUESTS",
    "BatchMismatchError",
    "BatchRequest",
    "custom_id",
    "params_digest",
    "plan",
    "run_batch",
]
