"""Container health check: Orthanc answers an authenticated request that reads its index."""

from __future__ import annotations

import sys
import urllib.error
from pathlib import Path

from auscat_client import MERGED_CONFIG, Client

TIMEOUT_SECONDS = 5


def main(config: Path = MERGED_CONFIG) -> int:
    try:
        client = Client.from_merged_config(config, timeout=TIMEOUT_SECONDS)
    except (OSError, ValueError) as error:
        print(f"unhealthy: cannot read {config}: {error}")
        return 1
    try:
        # GET /changes?last is answered from the database, so a hung index fails the check.
        client.json("GET", "/changes?last")
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"unhealthy: {error}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
