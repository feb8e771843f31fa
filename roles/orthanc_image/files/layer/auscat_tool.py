"""Checks run inside the Orthanc container by the lifecycle playbooks.

    inventory [--list]  counts at each level and a digest over every instance's stored MD5
    roundtrip           create an instance through REST, read it back, compare, delete it

Both print one JSON object and exit non-zero when Orthanc does not answer as expected.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import urllib.error
from typing import Any

from auscat_client import Client

PAGE = 1000
ROUNDTRIP_PATIENT = "AUSCAT-ROUNDTRIP"
# An 8 x 8 grey ramp: the round trip stores a complete Secondary Capture image, which passes the
# layer's integrity check like any instance must.
ROUNDTRIP_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAI0lEQVR4nGNggAEBKGBQgAIGAyhgcIAChgAo"
    "YEiAAoYCKAAAO1cOAa4O4hwAAAAASUVORK5CYII="
)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def instance_ids(client: Client) -> list[str]:
    ids: list[str] = []
    while True:
        page = client.json("GET", f"/instances?since={len(ids)}&limit={PAGE}")
        ids.extend(page)
        if len(page) < PAGE:
            return ids


def inventory(client: Client, with_list: bool) -> dict[str, Any]:
    statistics = client.json("GET", "/statistics")
    md5 = {
        instance: client.call("GET", f"/instances/{instance}/attachments/dicom/md5").decode().strip()
        for instance in instance_ids(client)
    }
    lines = "".join(f"{instance} {md5[instance]}\n" for instance in sorted(md5))
    result: dict[str, Any] = {
        "patients": statistics["CountPatients"],
        "studies": statistics["CountStudies"],
        "series": statistics["CountSeries"],
        "instances": statistics["CountInstances"],
        "listed": len(md5),
        "digest": hashlib.sha256(lines.encode()).hexdigest(),
    }
    if with_list:
        result["md5"] = md5
    return result


def roundtrip(client: Client) -> dict[str, Any]:
    started = time.monotonic()
    created = client.json(
        "POST",
        "/tools/create-dicom",
        {
            "Tags": {
                "PatientID": ROUNDTRIP_PATIENT,
                "PatientName": "ROUNDTRIP",
                "PatientIdentityRemoved": "YES",
                "Modality": "OT",
                "SOPClassUID": SECONDARY_CAPTURE,
                "StudyDescription": "AusCAT health gate",
            },
            "Content": ROUNDTRIP_PNG,
        },
    )
    instance = created["ID"]
    try:
        data = client.call("GET", f"/instances/{instance}/file")
        stored_md5 = client.call("GET", f"/instances/{instance}/attachments/dicom/md5").decode().strip()
        if data[128:132] != b"DICM" or hashlib.md5(data).hexdigest() != stored_md5:  # noqa: S324
            raise ValueError(f"instance {instance} read back differs from what Orthanc recorded")
    finally:
        client.call("DELETE", f"/instances/{instance}")
    return {"roundtrip": "ok", "seconds": round(time.monotonic() - started, 3)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-tool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inventory_parser = sub.add_parser("inventory")
    inventory_parser.add_argument("--list", action="store_true", help="include every instance's MD5")
    sub.add_parser("roundtrip")
    args = parser.parse_args(argv)
    try:
        client = Client.from_merged_config()
        result = inventory(client, args.list) if args.command == "inventory" else roundtrip(client)
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        print(json.dumps({"error": f"{args.command} failed: {error}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
