"""The benchmark's outputs: the printed table (pure), results.json and results.png."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MEASURE_NAMES = {
    "cstore": "C-STORE",
    "rest-ingest": "REST ingest",
    "rest-retrieve": "REST zip",
    "disk-write": "file+fsync",
}
SERVER_ORDER = ("deployed", "deployed-direct", "postgresql", "stock", "bare", "disk")
GIB = 1 << 30


def _server_rank(name: str) -> int:
    return SERVER_ORDER.index(name) if name in SERVER_ORDER else len(SERVER_ORDER)


def format_goal_value(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "drift":
        return f"{value * 100:+.1f} %"
    return f"{value:g} {unit}"


def format_threshold(comparison: str, threshold: float, unit: str) -> str:
    if unit == "drift":
        return f"{comparison} {threshold * 100:+.0f} %"
    if unit == "x":
        return f"{comparison} {threshold:g}x"
    return f"{comparison} {threshold:g} {unit}"


def _header(results: Mapping[str, Any]) -> list[str]:
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    memory = machine.get("memory_bytes")
    lines = [
        f"AusCAT Orthanc benchmark, started {results.get('started', '?')}, "
        f"{results.get('duration_seconds', 0) / 60:.1f} min" + ("" if results.get("complete") else " (INCOMPLETE)"),
        f"Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu_model') or 'unknown model'}), "
        f"{memory / GIB:.1f} GiB, kernel {machine.get('kernel', '?')}, {machine.get('os') or '?'}"
        if memory
        else f"Machine: {machine.get('nproc', '?')} CPUs, kernel {machine.get('kernel', '?')}",
    ]
    servers = results.get("servers", {})
    if servers:
        described = "; ".join(
            f"{name}: Orthanc {info.get('orthanc_version', '?')} ({info.get('description', '')})"
            for name, info in sorted(servers.items(), key=lambda item: _server_rank(item[0]))
        )
        lines.append(f"Servers: {described}")
    if settings:
        lines.append(
            f"{settings.get('instances_per_run')} CT slices of {settings.get('instance_mb', 0):.2f} MB per run, "
            f"{settings.get('rounds')} rounds; MB = 10^6 bytes"
        )
    background = results.get("background_load") or []
    if background:
        loads = ", ".join(f"{item['host_busy']:.0%}" for item in background)
        lines.append(f"Host CPUs busy before each round, from work other than the benchmark: {loads}")
    if results.get("error"):
        lines.append(f"ERROR: {results['error']}")
    return lines


def _optional(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return format(value, spec) if value is not None else "-".rjust(width)


def _ingest_rows(summaries: list[Mapping[str, Any]]) -> list[str]:
    if not summaries:
        return []
    rows = [
        "",
        "Ingest, retrieval and disk: median over rounds; Orthanc CPU ms per instance; host CPUs busy",
        f"{'measurement':<13} {'client':<10} {'conc':>4}  {'server':<15} {'inst/s':>8} {'MB/s':>8} {'n':>3}"
        f" {'cpu ms':>7} {'busy':>5}  range inst/s",
    ]
    measure_rank = list(MEASURE_NAMES)
    ordered = sorted(
        summaries,
        key=lambda item: (
            measure_rank.index(item["measure"]) if item["measure"] in measure_rank else 99,
            item["client"],
            item["concurrency"],
            _server_rank(item["server"]),
        ),
    )
    for item in ordered:
        rows.append(
            f"{MEASURE_NAMES.get(item['measure'], item['measure']):<13} {item['client']:<10} {item['concurrency']:>4}  "
            f"{item['server']:<15} {item['rate']:>8.1f} {item['mbps']:>8.1f} {item['n']:>3} "
            f"{_optional(item.get('server_cpu_ms'), '7.1f')} {_optional(item.get('host_busy'), '5.0%')}  "
            f"{item['rate_min']:.1f}-{item['rate_max']:.1f}"
            + (f"  ({item['retries']} resent)" if item.get("retries") else "")
        )
    return rows


def _growth_rows(growth: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not growth:
        return []
    rows = [
        "",
        "Finds as the archive grows: latency in ms, median / p95; ingest rate of the window ending there",
        f"{'backend':<11} {'instances':>9}  {'/tools/find':>15}  {'C-FIND':>15}  {'window ingest':>13}"
        f"  {'cpu ms':>6} {'busy':>5}",
    ]
    for backend, result in growth.items():
        windows = {window["end"]: window for window in result.get("windows", [])}
        for checkpoint in result.get("checkpoints", []):
            window = windows.get(checkpoint["instances"])
            tools, cfind = checkpoint["tools_find"], checkpoint["cfind"]
            rows.append(
                f"{backend:<11} {checkpoint['instances']:>9}  "
                f"{tools['median_ms']:>6.2f} / {tools['p95_ms']:>6.2f}  "
                f"{cfind['median_ms']:>6.2f} / {cfind['p95_ms']:>6.2f}  "
                + (
                    f"{window['rate']:>6.0f} inst/s  {_optional(window.get('server_cpu_ms'), '6.2f')} "
                    f"{_optional(window.get('host_busy'), '5.0%')}"
                    + (f"  ({window['retries']} resent)" if window.get("retries") else "")
                    if window
                    else f"{'-':>13}"
                )
            )
        if result.get("drift") is not None:
            rows.append(
                f"{backend:<11} ingest drift, first to last window: {result['drift'] * 100:+.1f} % "
                f"({result.get('threads')} REST threads, {result.get('instance_size', 0) / 1000:.1f} KB instances)"
            )
    return rows


def _section(title: str, lines: list[str]) -> list[str]:
    """A titled block of the report after a blank line, or nothing when it has no lines."""
    return ["", title, *lines] if lines else []


def _ratio_rows(ratios: list[Mapping[str, Any]]) -> list[str]:
    return _section(
        "Ratios of medians measured side by side",
        [
            f"{item['name']:<44} {item['value']:>6.3f}  ({item['numerator']} {item['numerator_value']:.1f} / "
            f"{item['denominator']} {item['denominator_value']:.1f} "
            f"{'MB/s' if item['unit'] == 'mbps' else 'inst/s'})"
            for item in ratios
        ],
    )


def _failure_rows(failures: list[str]) -> list[str]:
    return _section(
        f"Runs that failed once and were measured again ({len(failures)}; details in results.json)",
        [f"  {failure.splitlines()[0]}" for failure in failures],
    )


def _goal_rows(goals: list[Mapping[str, Any]]) -> list[str]:
    verdicts = {True: "reached", False: "MISSED", None: "n/a"}
    return _section(
        "Goals",
        [
            f"{verdicts[goal['reached']]:<8} {goal['goal']}: {format_goal_value(goal['measured'], goal['unit'])} "
            f"(target {format_threshold(goal['comparison'], goal['threshold'], goal['unit'])})"
            for goal in goals
        ],
    )


def format_table(results: Mapping[str, Any]) -> str:
    """The human-readable report of a results document (as written to results.json)."""
    lines = _header(results)
    lines += _ingest_rows(list(results.get("summaries", [])))
    lines += _growth_rows(results.get("growth", {}))
    lines += _ratio_rows(list(results.get("ratios", [])))
    lines += _goal_rows(list(results.get("goals", [])))
    lines += _failure_rows(list(results.get("failures", [])))
    return "\n".join(lines) + "\n"


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Ingest rate per client and concurrency (bars per server), find latency and ingest rate as the archive grows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [item for item in results.get("summaries", []) if item["measure"] in ("cstore", "rest-ingest")]
    growth = results.get("growth", {})
    figure, (bars, latency, rates) = plt.subplots(1, 3, figsize=(20, 6), gridspec_kw={"width_ratios": [2, 1, 1]})

    groups = sorted(
        {(item["measure"], item["client"], item["concurrency"]) for item in summaries},
        key=lambda group: (group[0] != "cstore", group[1], group[2]),
    )
    servers = sorted({item["server"] for item in summaries}, key=_server_rank)
    width = 0.8 / max(len(servers), 1)
    for offset, server in enumerate(servers):
        heights, low, high = [], [], []
        for measure, client, concurrency in groups:
            match = next(
                (
                    item
                    for item in summaries
                    if (item["measure"], item["client"], item["concurrency"], item["server"])
                    == (measure, client, concurrency, server)
                ),
                None,
            )
            heights.append(match["rate"] if match else 0)
            low.append(match["rate"] - match["rate_min"] if match else 0)
            high.append(match["rate_max"] - match["rate"] if match else 0)
        positions = [index + offset * width - 0.4 + width / 2 for index in range(len(groups))]
        bars.bar(positions, heights, width, yerr=[low, high], capsize=2, label=server)
    bars.set_xticks(range(len(groups)))
    bars.set_xticklabels(
        [f"{client if measure == 'cstore' else 'REST'}\nx{concurrency}" for measure, client, concurrency in groups]
    )
    bars.set_ylabel("instances/s (median over rounds, range as error bar)")
    bars.set_title("Ingest of 512x512 CT slices: C-STORE by client, REST; x concurrent associations/connections")
    bars.legend()
    bars.grid(axis="y", alpha=0.3)

    for index, (backend, result) in enumerate(growth.items()):
        color = f"C{index}"
        sizes = [checkpoint["instances"] for checkpoint in result.get("checkpoints", [])]
        for key, style in (("tools_find", "-o"), ("cfind", "--s")):
            medians = [checkpoint[key]["median_ms"] for checkpoint in result.get("checkpoints", [])]
            label = f"{backend} {'/tools/find' if key == 'tools_find' else 'C-FIND'}"
            latency.plot(sizes, medians, style, color=color, label=label)
        windows = result.get("windows", [])
        ends, window_rates = [window["end"] for window in windows], [window["rate"] for window in windows]
        rates.plot(ends, window_rates, "-o", color=color, label=f"{backend} ({result.get('threads')} threads)")
    latency.set_xlabel("instances in the archive")
    latency.set_ylabel("latency, ms (median)")
    latency.set_title("Study find by PatientID")
    latency.set_ylim(bottom=0)
    latency.grid(alpha=0.3)
    rates.set_xlabel("instances in the archive (end of window)")
    rates.set_ylabel("REST ingest, instances/s")
    rates.set_title("Ingest rate while the archive grows")
    rates.set_ylim(bottom=0)
    rates.grid(alpha=0.3)
    if growth:
        latency.legend()
        rates.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
