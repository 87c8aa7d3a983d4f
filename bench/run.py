"""Run every benchmark and print a summary of the figures against their targets.

    .venv/bin/python bench/run.py

Exits 0 even when a target is missed (a benchmark is a measurement, not a test); a missed
target is printed as MISSED.
"""

from __future__ import annotations

import platform
import sys

import curate_steps
import dedup
import import_time
import llamacpp_pipeline
import llamacpp_throughput
import openai_throughput
import pipeline_throughput
import rate_limits
import ray_executor
import report as run_report
import sampler
import task_overhead
import whole_run


def main() -> int:
    print(f"Python {platform.python_version()} on {platform.platform()}\n")
    imports = import_time.measure()
    import_time.report(imports)
    print()
    overhead = task_overhead.measure()
    task_overhead.report(overhead)
    print()
    throughput = openai_throughput.measure()
    openai_throughput.report(throughput)
    print()
    pipeline = pipeline_throughput.measure()
    pipeline_throughput.report(pipeline)
    print()
    local = llamacpp_throughput.measure()
    llamacpp_throughput.report(local)
    print()
    local_pipeline = llamacpp_pipeline.measure()
    llamacpp_pipeline.report(local_pipeline)
    print()
    limited = rate_limits.measure()
    rate_limits.report(limited)
    print()
    deduplication = dedup.measure()
    dedup.report(deduplication)
    print()
    curation = curate_steps.measure()
    curate_steps.report(curation)
    print()
    sampled = sampler.measure()
    sampler.report(sampled)
    print()
    whole = whole_run.measure()
    whole_run.report(whole)
    print()
    on_ray = ray_executor.measure()
    ray_executor.report(on_ray)
    print()
    page = run_report.measure()
    run_report.report(page)

    def status(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    medians = imports["median_s"]
    rows = [
        (
            "import taskloom / import pydantic",
            f"{medians['taskloom'] * 1e3:.1f} / {medians['pydantic'] * 1e3:.1f} ms = {imports['ratio']:.2f}x",
            f"<= {imports['target_ratio']}x",
            status(imports["ratio_met"]),
        ),
        (
            "import taskloom loads no plugin/SDK",
            "clean" if imports["clean"] else ", ".join(imports["leaked_plugins"] + imports["leaked_modules"]),
            "clean",
            status(imports["clean"]),
        ),
        (
            "text-generation, scripted LLM",
            f"{overhead['us_per_row']:.2f} us/row ({overhead['ratio']:.1f}x plain Python)",
            f"<= {overhead['target_us_per_row']:.0f} us/row",
            status(overhead["met"]),
        ),
        (
            "  same, no-op LLM (task's own work)",
            f"{overhead['task_only_us_per_row']:.2f} us/row ({overhead['task_only_ratio']:.1f}x)",
            "-",
            "info",
        ),
        (
            "  3 generations, grouped",
            f"{overhead['us_per_row_3_grouped']:.2f} us/input row",
            "-",
            "info",
        ),
        (
            "openai provider vs plain asyncio, 256 in flight",
            f"{throughput['rows_per_s']['taskloom']:.0f} / {throughput['rows_per_s']['baseline']:.0f} rows/s "
            f"= {throughput['ratio']:.2f}x",
            f">= {throughput['target_ratio']}x",
            status(throughput["met"]),
        ),
        (
            "  client CPU per request (taskloom / plain)",
            f"{throughput['cpu_ms_per_request']['taskloom']:.2f} / "
            f"{throughput['cpu_ms_per_request']['baseline']:.2f} ms",
            "-",
            "info",
        ),
        (
            "Pipeline vs plain asyncio, 1,000 rows, 256 in flight",
            f"{pipeline['rows_per_s']['pipeline']:.0f} / {pipeline['rows_per_s']['baseline']:.0f} rows/s "
            f"= {pipeline['ratio']:.2f}x",
            f">= {pipeline['target_ratio']}x",
            status(pipeline["ratio_met"]),
        ),
        (
            "  framework CPU on top of the client's",
            f"{pipeline['framework_cpu_ms_per_row']:.3f} ms/row",
            f"<= {pipeline['target_cpu_ms_per_row']} ms/row",
            status(pipeline["cpu_met"]),
        ),
        (
            "  process start to first request",
            f"{pipeline['start_s'] * 1e3:.0f} ms (plain aiohttp script {pipeline['plain_start_s'] * 1e3:.0f} ms)",
            f"<= {pipeline['target_start_s'] * 1e3:.0f} ms",
            status(pipeline["start_met"]),
        ),
        (
            f"  peak memory, {pipeline['memory_rows']:,} rows",
            f"{pipeline['memory_mb']:.1f} MB",
            f"<= {pipeline['target_memory_mb']:.0f} MB",
            status(pipeline["memory_met"]),
        ),
        (
            f"  peak memory, {pipeline['memory_large_rows']:,} rows from JSONL",
            f"{pipeline['memory_large_mb']:.1f} MB = {pipeline['memory_growth']:.2f}x",
            f"<= {pipeline['target_flat']}x",
            status(pipeline["flat_met"]),
        ),
        (
            "llamacpp text-generation vs raw llama-cpp-python",
            f"{local['tokens_per_s']['taskloom']:.1f} / {local['tokens_per_s']['baseline']:.1f} tokens/s "
            f"= {local['ratio']:.3f}x",
            f">= {local['target_ratio']}x",
            status(local["met"] and local["same_text"]),
        ),
        (
            "  load() to first token (taskloom / raw)",
            f"{local['first_token_s']['taskloom'] * 1e3:.0f} / {local['first_token_s']['baseline'] * 1e3:.0f} ms",
            "-",
            "info",
        ),
    ]
    rows.append(
        (
            "llamacpp through a Pipeline vs raw llama-cpp-python",
            f"{local_pipeline['tokens_per_s']['pipeline']:.1f} / {local_pipeline['tokens_per_s']['plain']:.1f} "
            f"tokens/s = {local_pipeline['ratio']:.3f}x ({local_pipeline['same_work_ratio']:.2f}x of a loop "
            "that resets as the plugin does)",
            f">= {local_pipeline['target_ratio']}x",
            status(local_pipeline["met"] and local_pipeline["same_text"]),
        )
    )
    if local_pipeline["batched_ratio"] is not None:
        rows.append(
            (
                "llamacpp-server x8 through a Pipeline vs raw llama-cpp-python",
                f"{local_pipeline['tokens_per_s']['server x8']:.1f} / {local_pipeline['tokens_per_s']['plain']:.1f} "
                f"tokens/s = {local_pipeline['batched_ratio']:.3f}x (same text at 1 and 8 slots: "
                f"{local_pipeline['server_same_text']})",
                f">= {local_pipeline['batched_target_ratio']}x",
                status(local_pipeline["batched_met"] and bool(local_pipeline["server_same_text"])),
            )
        )
    for mode, label in (
        ("a", f"rate limits, {limited['requests']} rows: (a) requests_per_minute=600"),
        ("b", "  (b) no limits set, adaptive, limit headers"),
        ("b'", "  (b') the same, no limit headers"),
        ("c", "  (c) adaptive_concurrency=False (before)"),
    ):
        run = limited["modes"][mode]
        target = rate_limits.TARGETS.get(mode)
        rows.append(
            (
                label,
                f"{run['ratio']:.2f}x ideal, {run['refused_share']:.1%} answered 429",
                f"<= {target[0]}x, <= {target[1]:.0%}" if target else "-",
                status(run["met"]) if target else "info",
            )
        )
    cpu = limited["cpu_us_per_request"]
    rows.append(
        (
            "  limiter CPU per request (no limit / rpm)",
            f"{cpu['no limit']:.2f} / {cpu['rpm never waiting']:.2f} us",
            f"<= {rate_limits.TARGET_CPU_US:.0f} us",
            status(limited["cpu_met"]),
        )
    )
    cpu_per_row = deduplication["cpu_us_per_row"]
    rows.append(
        (
            f"deduplicate (minhash) vs plain datasketch, {deduplication['rows']:,} rows",
            f"{cpu_per_row['step']:.0f} / {cpu_per_row['plain']:.0f} us/row CPU = {deduplication['ratio']:.2f}x",
            f"<= {deduplication['target_ratio']}x",
            status(deduplication["ratio_met"] and deduplication["same_rows"]),
        )
    )
    rows.append(
        (
            "  peak memory of the step's process",
            f"{deduplication['peak_mb']['step']:.0f} MB",
            f"< {deduplication['target_memory_mb']:.0f} MB",
            status(deduplication["memory_met"]),
        )
    )
    for name, figure in curation["us_per_row"].items():
        rows.append(
            (
                name,
                f"{figure['per_row']:.1f} us/row",
                f"<= {curation['target_us']:g} us",
                status(figure["per_row"] <= curation["target_us"]),
            )
        )
    for label, case in sampled["cases"].items():
        rows.append(
            (
                f"sampler source, {sampled['rows']:,} rows, {label}",
                f"{case['seconds']['sampler']:.2f} s, {case['rows_per_s']['sampler']:,.0f} rows/s = "
                f"{case['ratio']:.2f}x a plain random loop ({case['ratio_seeded']:.2f}x one seeded per row)",
                f"<= {sampled['target_s']:g} s",
                status(case["met"]),
            )
        )
    for concurrency, data in whole["by_concurrency"].items():
        ours, plain = data["clients"]["taskloom"], data["clients"]["plain aiohttp"]
        rows.append(
            (
                f"whole run in a fresh process vs plain aiohttp, {concurrency} in flight",
                f"{plain['wall']:.2f} / {ours['wall']:.2f} s = {data['ratio']:.2f}x, "
                f"first request {ours['first_request'] * 1e3:.0f} / {plain['first_request'] * 1e3:.0f} ms "
                f"= {data['start_ratio']:.2f}x, server saw {ours['max_in_flight']:.0f}",
                f">= {whole_run.TARGET_RATIO}x, <= {whole_run.TARGET_START_RATIO}x",
                status(data["met"]),
            )
        )
    ray, local = on_ray["ray"], on_ray["local"]
    rows.append(
        (
            f"Ray executor x{on_ray['compared_workers']} vs local, {on_ray['rows']:,} rows, 256 in flight in all",
            f"{ray['generation_rows_per_s']:.0f} / {local['generation_rows_per_s']:.0f} rows/s while generating = "
            f"{on_ray['generation_ratio']:.2f}x (whole run {on_ray['ratio']:.2f}x), first request "
            f"{ray['first_request'] * 1e3:.0f} / {local['first_request'] * 1e3:.0f} ms, server saw "
            f"{ray['max_in_flight']:.0f}",
            f">= {on_ray['target_ratio']}x",
            status(on_ray["met"]),
        )
    )
    curve = on_ray["curve"]
    rows.append(
        (
            f"  Ray workers {' / '.join(str(count) for count in curve)}, 128 in flight each",
            " / ".join(f"{figures['rows_per_s']:.0f}" for figures in curve.values())
            + " rows/s, server saw "
            + " / ".join(f"{figures['max_in_flight']:.0f}" for figures in curve.values()),
            "-",
            "info",
        )
    )
    rows.append(
        (
            f"taskloom report, {page['rows']:,} rows",
            f"{page['seconds']:.2f} s, peak {page['peak_mb']:.0f} MB, page {page['html_mb']:.1f} MB "
            f"({page['ratio']:.1f}x parsing the JSONL)",
            f"<= {run_report.TARGET_S:.0f} s, < {run_report.TARGET_MB:.0f} MB, < {run_report.TARGET_HTML_MB:.0f} MB",
            status(page["met"]),
        )
    )
    widths = [max(len(row[i]) for row in [("benchmark", "measured", "target", ""), *rows]) for i in range(4)]
    print("\nsummary")
    for row in [("benchmark", "measured", "target", "status"), *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    missed = [row[0].strip() for row in rows if row[3] == "MISSED"]
    print("\n" + (f"MISSED: {', '.join(missed)}" if missed else "all targets met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
