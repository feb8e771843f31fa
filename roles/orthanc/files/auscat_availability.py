#!/usr/bin/env python3
"""Measure how long Orthanc's HTTP port stops answering, as a client sees it.

Polls URL without credentials every INTERVAL seconds: any HTTP answer (401
included) means the server is up; a refused or reset connection or a timeout
means it is down. Runs until STOP_FILE exists or MAX_SECONDS pass, then writes
a JSON summary to OUTPUT:

    python3 auscat_availability.py URL OUTPUT STOP_FILE [--interval 0.1] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Reachability only: no credentials are sent, so the certificate of an https URL need not be trusted.
UNVERIFIED = ssl._create_unverified_context()  # noqa: S323


def is_up(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=UNVERIFIED):  # noqa: S310 - loopback URL
            return True
    except urllib.error.HTTPError:
        return True  # 401 and friends: the server answered
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("output", type=Path)
    parser.add_argument("stop_file", type=Path)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)

    started = time.monotonic()
    outages: list[float] = []
    down_since: float | None = None
    samples = 0
    while not args.stop_file.exists() and time.monotonic() - started < args.max_seconds:
        now = time.monotonic()
        up = is_up(args.url, timeout=1.0)
        samples += 1
        if not up and down_since is None:
            down_since = now
        elif up and down_since is not None:
            outages.append(time.monotonic() - down_since)
            down_since = None
        time.sleep(args.interval)
    still_down = down_since is not None
    if still_down:
        outages.append(time.monotonic() - down_since)
    summary = {
        "samples": samples,
        "seconds_observed": round(time.monotonic() - started, 2),
        "outages": [round(seconds, 2) for seconds in outages],
        "total_downtime_seconds": round(sum(outages), 2),
        "longest_outage_seconds": round(max(outages, default=0.0), 2),
        "down_at_end": still_down,
    }
    args.output.write_text(json.dumps(summary), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
