"""Tokens per second of the local model through a taskloom task, against raw llama-cpp-python.

Both sides run the bundled SmolLM2-135M-Instruct with the same load options (``n_ctx``,
``n_threads``, ``n_batch``), the same prompts and the same sampling settings, seed included, so
they produce the same tokens; the check below makes sure they did. Taskloom's side is the whole
path a user takes: ``get_task("text-generation", llm=get_llm("llamacpp", ...)).process(rows)``.
The baseline is ``Llama.create_chat_completion`` in a plain loop. Rounds alternate; the best
round of each counts (target: at least 0.95x the baseline's tokens per second).

Time to first token is measured in fresh interpreters: from ``get_llm("llamacpp").load()`` to
the end of a one-token answer, against ``import llama_cpp``, ``Llama(...)`` and the same
one-token call (``load()`` is where taskloom imports llama-cpp-python, so both clocks include it).

    .venv/bin/python bench/llamacpp_throughput.py [--prompts 8] [--max-new-tokens 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

TARGET_RATIO = 0.95
PROMPTS = [
    "What's the capital of Spain?",
    "Write a short poem about autumn leaves.",
    "Explain what a prime number is to a child.",
    "Give three tips for writing clear emails.",
    "Describe the water cycle in a few sentences.",
    "What are the benefits of regular exercise?",
    "Summarise the plot of a detective story you invent.",
    "How do bees make honey?",
    "List some uses of a paperclip.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot and say why.",
    "What should I pack for a weekend hike?",
]
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}
SEED = 42

_TTFT_TASKLOOM = """
import time, json
from taskloom import get_llm
llm = get_llm("llamacpp")
start = time.perf_counter()
llm.load()
loaded = time.perf_counter()
[out] = llm.generate([[{"role": "user", "content": "What's the capital of Spain?"}]], max_new_tokens=1, seed=1)
done = time.perf_counter()
assert out["statistics"]["output_tokens"] == [1]
print(json.dumps({"load_s": loaded - start, "first_token_s": done - start}))
"""

_TTFT_RAW = """
import time, json
from taskloom_llamacpp import LlamaCppLLM
options = LlamaCppLLM().load_options().llama_kwargs()
start = time.perf_counter()
from llama_cpp import Llama  # taskloom imports it in load(), so the baseline's clock includes it too
llama = Llama(**options)
loaded = time.perf_counter()
out = llama.create_chat_completion(
    messages=[{"role": "user", "content": "What's the capital of Spain?"}], max_tokens=1, seed=1
)
done = time.perf_counter()
assert out["usage"]["completion_tokens"] == 1
print(json.dumps({"load_s": loaded - start, "first_token_s": done - start}))
"""


def _task(max_new_tokens: int) -> Any:
    from taskloom import get_llm, get_task

    llm = get_llm("llamacpp", generation_kwargs={**SAMPLING, "max_new_tokens": max_new_tokens, "seed": SEED})
    return get_task("text-generation", llm=llm)


def _taskloom_round(task: Any, prompts: list[str]) -> tuple[float, int, list[str]]:
    start = time.perf_counter()
    rows = next(task.process([{"instruction": p} for p in prompts]))
    elapsed = time.perf_counter() - start
    tokens = sum(row["distilabel_metadata"]["statistics_text-generation"]["output_tokens"] for row in rows)
    return elapsed, tokens, [row["generation"] for row in rows]


def _raw_round(llama: Any, prompts: list[str], max_new_tokens: int) -> tuple[float, int, list[str]]:
    """The baseline loop, on the plugin's llama.cpp thread.

    llama-cpp-python computes with OpenMP, which keeps a team of helper threads per thread that
    starts computations; a loop on the main thread next to the plugin's thread would make two
    teams on a 2-core machine, and libgomp would throttle both sides (see the plugin's README).
    """
    from taskloom_llamacpp.models import on_llama_thread

    def loop() -> tuple[float, int, list[str]]:
        start = time.perf_counter()
        tokens = 0
        texts = []
        for prompt in prompts:
            out = llama.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], max_tokens=max_new_tokens, seed=SEED, **SAMPLING
            )
            tokens += out["usage"]["completion_tokens"]
            texts.append(out["choices"][0]["message"]["content"])
        return time.perf_counter() - start, tokens, texts

    return on_llama_thread(loop)


def _fresh(code: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(prompts: int = 8, max_new_tokens: int = 128, repeat: int = 3, ttft_repeat: int = 3) -> dict[str, Any]:
    from llama_cpp import Llama
    from taskloom_llamacpp import LlamaCppLLM

    chosen = PROMPTS[:prompts]
    # The baseline loads its own copy with exactly the options the plugin uses.
    llama = Llama(**LlamaCppLLM().load_options().llama_kwargs())
    rounds: dict[str, list[tuple[float, int]]] = {"taskloom": [], "baseline": []}
    same_text = True
    task = _task(max_new_tokens)
    task.load()
    try:
        _raw_round(llama, chosen[:1], 8)  # warm the page cache and code paths on both sides
        _taskloom_round(task, chosen[:1])
        for _ in range(repeat):
            seconds, tokens, raw_texts = _raw_round(llama, chosen, max_new_tokens)
            rounds["baseline"].append((seconds, tokens))
            seconds, tokens, ours = _taskloom_round(task, chosen)
            rounds["taskloom"].append((seconds, tokens))
            same_text = same_text and ours == raw_texts
    finally:
        task.unload()
        llama.close()

    def best(side: str) -> float:
        return max(tokens / seconds for seconds, tokens in rounds[side])

    ttft: dict[str, list[dict[str, float]]] = {"taskloom": [], "baseline": []}
    for _ in range(ttft_repeat):
        ttft["baseline"].append(_fresh(_TTFT_RAW))
        ttft["taskloom"].append(_fresh(_TTFT_TASKLOOM))
    tokens_per_s = {side: best(side) for side in rounds}
    ratio = tokens_per_s["taskloom"] / tokens_per_s["baseline"]
    return {
        "prompts": len(chosen),
        "max_new_tokens": max_new_tokens,
        "tokens_per_round": {side: [t for _, t in r] for side, r in rounds.items()},
        "tokens_per_s": tokens_per_s,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
        "same_text": same_text,
        "load_s": {side: statistics.median(r["load_s"] for r in runs) for side, runs in ttft.items()},
        "first_token_s": {side: statistics.median(r["first_token_s"] for r in runs) for side, runs in ttft.items()},
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"llamacpp, {result['prompts']} prompts x up to {result['max_new_tokens']} new tokens, "
        f"best of {len(result['tokens_per_round']['taskloom'])} alternating rounds"
    )
    for side in ("taskloom", "baseline"):
        print(
            f"  {side:9s} {result['tokens_per_s'][side]:7.1f} tokens/s "
            f"(tokens per round {result['tokens_per_round'][side]})"
        )
    status = "ok" if result["met"] else "MISSED"
    print(f"  ratio {result['ratio']:.3f}x (target >= {result['target_ratio']}x) {status}")
    print(f"  same text on both sides: {result['same_text']}")
    print("  fresh process, median: load() (importing llama-cpp-python) then the first token of a one-token answer")
    for side in ("taskloom", "baseline"):
        print(
            f"  {side:9s} load {result['load_s'][side] * 1e3:6.0f} ms, "
            f"first token {result['first_token_s'][side] * 1e3:6.0f} ms after load() began"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.prompts, args.max_new_tokens, args.repeat))


if __name__ == "__main__":
    main()
