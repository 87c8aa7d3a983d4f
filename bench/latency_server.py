"""A loopback OpenAI-compatible server that answers every chat completion after a fixed delay.

It stands in for a remote API whose latency, not its compute, bounds throughput: the only way
to go faster against it is to keep more requests in flight. Runs in its own process so its CPU
does not count against the client being measured.

``GET /stats`` tells how many chat completions arrived, the most that were in flight at once
(the concurrency the server saw, whatever the client asked for), when the first one arrived, as
``time.time()`` and ``time.monotonic()`` (on Linux the monotonic clock is one for all processes,
so a client can compare it with its own), and when the last answer left; a benchmark timing a
fresh process from its start to its first request reads it there. ``POST /reset`` forgets all
of it between two measurements.

    python bench/latency_server.py --port 8399 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

REPLY = "A fixed answer from the latency server."


def make_app(delay: float) -> web.Application:
    state = {"requests": 0, "in_flight": 0, "max_in_flight": 0}
    first: dict[str, float] = {}  # when the first chat completion arrived, on both clocks
    last: dict[str, float] = {}  # when the last answer was sent (monotonic)

    async def chat(request: web.Request) -> web.Response:
        if not first:  # before reading the body: the moment the request reached the handler
            first.update(wall=time.time(), monotonic=time.monotonic())
        body = await request.json()
        state["requests"] += 1
        state["in_flight"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            await asyncio.sleep(delay)
        finally:
            state["in_flight"] -= 1
            last["monotonic"] = time.monotonic()
        n = int(body.get("n") or 1)
        payload = {
            "id": f"cmpl-{state['requests']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "latency"),
            "choices": [
                {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}
                for i in range(n)
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 8 * n, "total_tokens": 12 + 8 * n},
        }
        return web.Response(text=json.dumps(payload), content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                **state,
                "first_request_at": first.get("wall"),
                "first_request_monotonic": first.get("monotonic"),
                "last_response_monotonic": last.get("monotonic"),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        state.update(requests=0, in_flight=0, max_in_flight=0)
        first.clear()
        last.clear()
        return web.json_response({"status": "ok"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    args = parser.parse_args()
    # backlog: hundreds of connections arrive at once
    web.run_app(make_app(args.delay), host="127.0.0.1", port=args.port, print=None, backlog=2048, access_log=None)


if __name__ == "__main__":
    main()
