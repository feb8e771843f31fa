"""From summaries to the ratios the benchmark reports and the goals it checks (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tests.bench.stats import Goal, Ratio, Summary, find_summary, ratio, ratio_value

REFERENCE = "deployed"  # the SQLite stack deployed by the playbook: every ratio compares against it
# The same Orthanc reached at its container's address: a client on 127.0.0.1 goes through docker-proxy.
DIRECT = "deployed-direct"
STACK_VIEWS = {REFERENCE: ("stack/bare", "published port"), DIRECT: ("stack direct/bare", "container address")}


def cstore_name(client: str, concurrency: int) -> str:
    return f"C-STORE {client} x{concurrency}"


def rest_name(concurrency: int) -> str:
    return f"REST ingest x{concurrency}"


def build_ratios(
    summaries: Sequence[Summary], clients: Sequence[str], concurrencies: Sequence[int], servers: Sequence[str]
) -> list[Ratio]:
    """Every ratio measured side by side; those whose servers were not part of the run are left out."""

    def cstore(client: str, concurrency: int, server: str) -> tuple[str, Summary | None]:
        return server, find_summary(summaries, "cstore", client, concurrency, server)

    def rest(concurrency: int, server: str) -> tuple[str, Summary | None]:
        return server, find_summary(summaries, "rest-ingest", "rest", concurrency, server)

    ratios: list[Ratio | None] = []
    for concurrency in concurrencies:
        for client in clients:
            name = cstore_name(client, concurrency)
            stock = cstore(client, concurrency, "stock")
            ratios.append(ratio(f"deployed/stock {name}", cstore(client, concurrency, REFERENCE), stock))
    for concurrency in concurrencies:
        for client in clients:
            numerator = (cstore_name(client, concurrency), cstore(client, concurrency, REFERENCE)[1])
            denominator = (rest_name(concurrency), rest(concurrency, REFERENCE)[1])
            ratios.append(ratio(f"C-STORE/REST deployed {client} x{concurrency}", numerator, denominator))
    for view, (prefix, _) in STACK_VIEWS.items():
        for concurrency in concurrencies:
            for client in clients:
                name = cstore_name(client, concurrency)
                bare = cstore(client, concurrency, "bare")
                ratios.append(ratio(f"{prefix} {name}", cstore(client, concurrency, view), bare))
            bare = rest(concurrency, "bare")
            ratios.append(ratio(f"{prefix} {rest_name(concurrency)}", rest(concurrency, view), bare))
    for concurrency in concurrencies:
        for client in clients:
            name = cstore_name(client, concurrency)
            direct = cstore(client, concurrency, DIRECT)
            ratios.append(ratio(f"published/direct {name}", cstore(client, concurrency, REFERENCE), direct))
        direct = rest(concurrency, DIRECT)
        ratios.append(ratio(f"published/direct {rest_name(concurrency)}", rest(concurrency, REFERENCE), direct))
    if "postgresql" in servers:
        for concurrency in concurrencies:
            for client in clients:
                name = cstore_name(client, concurrency)
                postgresql = cstore(client, concurrency, "postgresql")
                ratios.append(ratio(f"postgresql/sqlite {name}", postgresql, cstore(client, concurrency, REFERENCE)))
    disk = ("file+fsync", find_summary(summaries, "disk-write", "fsync", 1, "disk"))
    for client in clients:
        numerator = (cstore_name(client, 1), cstore(client, 1, REFERENCE)[1])
        ratios.append(ratio(f"ingest/disk {cstore_name(client, 1)}", numerator, disk, unit="mbps"))
    numerator = (rest_name(1), rest(1, REFERENCE)[1])
    ratios.append(ratio(f"ingest/disk {rest_name(1)}", numerator, disk, unit="mbps"))
    return [item for item in ratios if item is not None]


def build_goals(ratios: Sequence[Ratio], clients: Sequence[str], growth: Mapping[str, Mapping[str, Any]]) -> list[Goal]:
    """The benchmark's targets, each with what this run measured (None where it was not measured)."""
    goals = []
    for client in clients:
        measured = ratio_value(ratios, f"deployed/stock {cstore_name(client, 1)}")
        goals.append(Goal(f"C-STORE 1 association >= 4x stock Orthanc ({client})", measured, 4.0, ">=", "x"))
    for client in clients:
        measured = ratio_value(ratios, f"C-STORE/REST deployed {client} x1")
        goals.append(Goal(f"C-STORE >= 0.8 of REST ingest ({client}, 1 association)", measured, 0.8, ">=", "x"))
    for prefix, path in STACK_VIEWS.values():
        for client in clients:
            measured = ratio_value(ratios, f"{prefix} {cstore_name(client, 1)}")
            goal = f"stack >= 0.95 of bare Orthanc (C-STORE {client}, 1 association, {path})"
            goals.append(Goal(goal, measured, 0.95, ">=", "x"))
        measured = ratio_value(ratios, f"{prefix} {rest_name(1)}")
        goal = f"stack >= 0.95 of bare Orthanc (REST ingest, 1 connection, {path})"
        goals.append(Goal(goal, measured, 0.95, ">=", "x"))

    postgresql = growth.get("postgresql") or {}
    end = postgresql["checkpoints"][-1]["instances"] if postgresql.get("checkpoints") else "N"
    drift = postgresql.get("drift")
    goal = f"PostgreSQL ingest drift from 0 to {end} instances > -15 % (the rate falls by less than 15 %)"
    goals.append(Goal(goal, drift, -0.15, ">", "drift"))
    for backend in ("sqlite", "postgresql"):
        result = growth.get(backend) or {}
        last = result["checkpoints"][-1] if result.get("checkpoints") else None
        at = last["instances"] if last else "N"
        measured = last["tools_find"]["median_ms"] if last else None
        goals.append(
            Goal(f"/tools/find by PatientID < 5 ms at {at} instances ({backend}, median)", measured, 5.0, "<", "ms")
        )
    return goals
