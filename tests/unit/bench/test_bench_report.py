"""The result table, the marked section of docs/performance.md and the plots of `klt bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from klt_cli import bench

RUN = {
    "command": "./klt bench --quick",
    "script": "python bench/throughput.py --workloads 10",
    "mode": "quick",
    "started": "2026-11-21T09:15:02Z",
    "seconds": 95.2,
    "machine": {"cpu_model": "Test CPU", "cores": 2, "ram_gib": 23.5, "kernel": "Linux"},
    "versions": {"klt": "abc1234", "python": "3.11.7", "kafka": "4.1.1", "kubernetes": "v1.34.1"},
    "load_average": {
        "before_1_5_15m": [1.5, 1.2, 1.0],
        "after_1_5_15m": [2.5, 1.6, 1.1],
        "max_1m": 3.25,
    },
}


def _throughput(run: dict[str, Any] | None) -> dict[str, Any]:
    def config(n: int, rate: float) -> dict[str, Any]:
        return {
            "instances_per_service": n,
            "workloads": 10,
            "completed": 10,
            "workloads_per_second": rate,
            "latency_ms": {"p50": 2500.0, "p90": 3000.0, "p99": 3100.0, "max": 3100.0},
            "steps": {
                "pre_task_median_s": 2.5,
                "pre_evaluation_median_s": 0.5,
                "deployment_median_s": None,
            },
            "cpu_seconds_per_service": {"scheduler": 1.0 * n, "evaluator": 0.25},
            "memory": {
                f"scheduler-{i}": {"idle_rss_mib": 120.0 + i, "load_rss_max_mib": 131.5}
                for i in range(n)
            },
        }

    short = config(2, 1.25) | {"completed": 9, "failed": {"w-9": "AppDeploy"}, "timed_out": []}
    short |= {"pods_on_nodes": 240, "node_pod_capacity": 250}
    result: dict[str, Any] = {
        "date": "2026-11-21",
        "command": "python bench/throughput.py",
        "configs": [config(1, 2.5), short],
    }
    if run is not None:
        result["run"] = run
    return result


WEBHOOK = {
    "date": "2026-11-20",
    "command": "python bench/webhook_admission.py --rates 50,100",
    "results": [
        {
            "rate_per_s": rate,
            "errors": 0,
            "p50_ms": 1.25,
            "p99_ms": 9.5,
            "server_p99_ms_le": 1.0,
            "webhook_cpu_percent": 12.0,
        }
        for rate in (50, 100)
    ],
    "webhook_memory": {"idle_rss_mib": 140.0, "load_rss_max_mib": 144.5, "hwm_mib": 150.0},
}


def test_the_table_has_one_row_per_figure_with_its_load_and_provenance() -> None:
    text = bench.section({"throughput": _throughput(RUN), "webhook_admission": WEBHOOK})

    assert "| throughput | 1 instance(s) per service: to Completed | 2.5 workloads/s" in text
    assert (
        "| throughput | 2 instance(s) per service: to Completed | 1.25 workloads/s (9/10 "
        "completed; each p50 2500 ms, p99 3100 ms); 1 failed (AppDeploy), 0 timed out; "
        "240 pods on nodes of capacity 250 |"
    ) in text
    assert (
        "| 2 instance(s): median step; CPU seconds used | task 2.5 s, evaluation 0.5 s, "
        "deployment n/a s; scheduler 2.0, evaluator 0.25 |"
    ) in text
    assert "| throughput | scheduler RSS idle → under load (max) | 120.0 → 131.5 MiB | " in text
    assert "| 50 req/s: client p50 / p99 (server p99) | 1.25 / 9.5 ms (≤ 1 ms)" in text
    assert "| webhook RSS idle → under load (max) | 140.0 → 144.5 MiB | not recorded |" in text
    # load average before / highest during / after, from the run block
    assert "| 1.5 / 3.25 / 2.5 |" in text
    # a figure states its machine, versions and command
    assert (
        "- **throughput**: 2026-11-21 09:15 UTC, `./klt bench --quick` "
        "(`python bench/throughput.py --workloads 10`); Test CPU, 2 cores, 23.5 GiB; "
        "klt abc1234, Python 3.11.7, Kafka 4.1.1, Kubernetes v1.34.1"
    ) in text
    assert "- **webhook_admission**: 2026-11-20, `python bench/webhook_admission.py" in text
    assert "![memory](img/bench-memory.png)" in text
    assert "bus_latency" not in text  # no result, no row


def test_a_result_it_cannot_read_becomes_a_row_that_says_so() -> None:
    text = bench.section({"lifecycle": {"sequential": {"runs": 3}}})

    assert "| lifecycle | (result not understood) | KeyError: 'overhead_p50_ms' |" in text


def test_only_the_text_between_the_markers_is_replaced() -> None:
    doc = f"# Performance\n\nintro\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n## Later\n\nkept\n"

    once = bench.replace_section(doc, "new table")
    twice = bench.replace_section(once, "new table")

    assert (
        once
        == f"# Performance\n\nintro\n\n{bench.BEGIN}\nnew table\n{bench.END}\n\n## Later\n\nkept\n"
    )
    assert twice == once


def test_missing_markers_are_appended_with_a_heading() -> None:
    out = bench.replace_section("# Performance\n", "table")

    assert out == f"# Performance\n\n## Latest figures\n\n{bench.BEGIN}\ntable\n{bench.END}\n"


def test_plots_are_png_files_for_the_figures_that_have_results(tmp_path: Path) -> None:
    written = bench.plot_all(
        {"throughput": _throughput(RUN), "webhook_admission": WEBHOOK}, tmp_path
    )

    assert sorted(p.name for p in written) == [
        "bench-memory.png",
        "bench-throughput.png",
        "bench-webhook_admission.png",
    ]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert path.stat().st_size > 10_000


def test_an_instance_count_that_could_not_run_says_why() -> None:
    result = _throughput(None)
    result["configs"][1] = {"instances_per_service": 2, "error": "the nodes have room for 0"}

    text = bench.section({"throughput": result})

    assert "| throughput | 2 instance(s) per service | the nodes have room for 0 |" in text
    assert "| throughput | scheduler RSS idle → under load (max) | 120.0 → 131.5 MiB |" in text
