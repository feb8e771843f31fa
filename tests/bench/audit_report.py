"""Audit report benchmark: what the two report questions cost against the size of the trail.

    python -m tests.bench.audit_report [--sizes 11,110,1100] [--output build/audit-report-bench]

For each size (megabytes of audit lines, spread over rotated files as the trail keeps them: the largest default
is 1100, 100 MB x 11 files) it writes a synthetic trail with the layer's own writer (``auscat_audit.AuditTrail``)
and line builders: HTTP decisions of 50 users over 2,000 studies, one line in ten a download, stored instances
and associations. Then it times, with the layer's functions that ``auscat_tool audit`` runs, "who accessed this
study" (``who_accessed``) and "what did this user download in this week" (``downloads_of``), three times each,
and reports the median seconds, megabytes per second and the slope of log(time) against log(size) (1.0: the
cost is proportional to the trail, which is bounded by orthanc_audit_max_mb x (orthanc_audit_files + 1); it does
not grow with the archive). The resource lookup in the index that the container's report adds is not timed here.
Results: results.json and results.txt under --output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import stack

sys.path.insert(0, str(stack.REPOSITORY / "roles" / "orthanc_image" / "files" / "layer"))
import auscat_access  # the layer's own modules, from the path above
import auscat_audit

FILE_MEGABYTES = 100
REPEATS = 3
USERS = [f"researcher-{number:02d}" for number in range(50)]
STUDIES = [f"{number:08x}-0000-0000-0000-000000000000" for number in range(2000)]
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def say(message: str) -> None:
    print(message, flush=True)


def synthetic_line(rng: random.Random, moment: datetime.datetime) -> str:
    """One line as the layer writes it: mostly HTTP decisions, some stored instances and associations."""
    kind = rng.random()
    study = rng.choice(STUDIES)
    if kind < 0.08:
        return auscat_audit.instance_line(
            "stored", "C-STORE", f"1.2.826.0.1.3680043.8.498.{rng.randrange(10**9)}", instance_id=study,
            calling_aet="CTP", called_aet="ORTHANC", client="10.42.42.250", now=moment,
        )  # fmt: skip
    if kind < 0.09:
        return auscat_audit.association_line("accepted", "CTP", "10.42.42.250", now=moment)
    path = f"/studies/{study}/archive" if kind < 0.19 else f"/studies/{study}"
    decision = auscat_access.Decision(True, rng.choice(USERS), "researcher", "listed for the role")
    return auscat_access.http_line(decision, "GET", path, "10.0.0.7", now=moment)


def write_trail(directory: Path, megabytes: int, seed: int) -> int:
    """A trail of about ``megabytes``, in rotated files; returns its line count."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data
    trail = auscat_audit.AuditTrail(directory, FILE_MEGABYTES, files=1000, stream_fd=None)
    written = lines = 0
    moment = START
    while written < megabytes * 1024 * 1024:
        line = synthetic_line(rng, moment)
        trail.write(line)
        written += len(line) + 1
        lines += 1
        moment += datetime.timedelta(milliseconds=200)
    trail.close()
    return lines


def timed(function) -> float:
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        function()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def measure(megabytes: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="auscat-audit-bench-") as scratch:
        directory = Path(scratch) / "audit"
        say(f"writing a {megabytes} MB trail")
        lines = write_trail(directory, megabytes, seed)
        size = sum(path.stat().st_size for path in auscat_audit.audit_files(directory))
        study = STUDIES[7]

        def who() -> None:
            auscat_audit.who_accessed(auscat_audit.read_lines(directory), {study}, set())

        def downloads() -> None:
            auscat_audit.downloads_of(auscat_audit.read_lines(directory), USERS[3], "2026-01-05", "2026-01-12")

        result = {"megabytes": round(size / 1024 / 1024, 1), "lines": lines,
                  "files": len(auscat_audit.audit_files(directory))}  # fmt: skip
        for name, function in (("who_accessed", who), ("downloads_of", downloads)):
            seconds = timed(function)
            result[name] = {"seconds": round(seconds, 3), "mb_per_s": round(size / 1024 / 1024 / seconds, 1)}
            say(f"  {name}: {seconds:.2f} s ({result[name]['mb_per_s']} MB/s) over {lines} lines")
        return result


def slope(results: list[dict[str, Any]], name: str) -> float:
    """Least-squares slope of log(seconds) against log(megabytes)."""
    xs = [math.log(result["megabytes"]) for result in results]
    ys = [math.log(result[name]["seconds"]) for result in results]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


def table(results: list[dict[str, Any]], slopes: dict[str, float]) -> str:
    rows = ["| trail (MB) | files | lines | who accessed a study (s) | what a user downloaded (s) |",
            "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for result in results:
        rows.append(
            f"| {result['megabytes']} | {result['files']} | {result['lines']} | {result['who_accessed']['seconds']}"
            f" ({result['who_accessed']['mb_per_s']} MB/s) | {result['downloads_of']['seconds']}"
            f" ({result['downloads_of']['mb_per_s']} MB/s) |"
        )
    rows.append("")
    rows.append("slope of log(time) against log(size): " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
    return "\n".join(rows) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.audit_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--sizes", default="11,110,1100", help="trail sizes in MB, comma-separated")
    parser.add_argument("--output", type=Path, default=Path("build/audit-report-bench"))
    args = parser.parse_args(argv)
    try:
        sizes = sorted(int(size) for size in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be whole megabytes separated by commas, not {args.sizes!r}")
    if len(sizes) < 2 or sizes[0] <= 0:
        parser.error("--sizes needs at least two positive sizes")
    results = [measure(megabytes, seed) for seed, megabytes in enumerate(sizes)]
    slopes = {name: slope(results, name) for name in ("who_accessed", "downloads_of")}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps({"results": results, "slopes": slopes}, indent=2) + "\n")
    text = table(results, slopes)
    (args.output / "results.txt").write_text(text)
    say(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
