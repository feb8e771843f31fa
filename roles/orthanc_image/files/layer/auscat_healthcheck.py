"""Container health check: Orthanc answers an authenticated request that reads its index.

Credentials come from the merged configuration inside the container, never from
the stack file or the environment, so they do not show in ``docker inspect``.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

MERGED_CONFIG = Path(os.environ.get("AUSCAT_MERGED_CONFIG", "/run/auscat/orthanc.json"))
TIMEOUT_SECONDS = 5


def probe_request(config: dict) -> urllib.request.Request:
    """GET /changes?last: answered from the database, so a hung index fails the check."""
    scheme = "https" if config.get("SslEnabled", False) else "http"
    port = config.get("HttpPort", 8042)
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/changes?last")  # noqa: S310 - fixed http(s) URL
    users = config.get("RegisteredUsers") or {}
    if config.get("AuthenticationEnabled", True) and users:
        user, password = next(iter(users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def main() -> int:
    try:
        config = json.loads(MERGED_CONFIG.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"unhealthy: cannot read {MERGED_CONFIG}: {error}")
        return 1
    # The check talks to loopback inside the container; the certificate names the public host.
    context = ssl._create_unverified_context()  # noqa: S323
    try:
        with urllib.request.urlopen(probe_request(config), timeout=TIMEOUT_SECONDS, context=context) as reply:  # noqa: S310
            json.load(reply)
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"unhealthy: {error}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
