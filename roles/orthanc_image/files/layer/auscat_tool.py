"""Checks run inside the Orthanc container by the lifecycle playbooks.

    inventory [--list]  counts at each level and a digest over every instance's stored MD5
    roundtrip           create an instance through REST, read it back, compare, delete it
    scan                apply the layer's rules, with the anonymisation gate on, to every stored
                        instance and list those that would be refused today (exit status 3)

Each prints one JSON object and exits non-zero when Orthanc does not answer as expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
import urllib.error
from typing import Any

from auscat_client import MERGED_CONFIG, Client
from auscat_rules import Refusal, Rules

PAGE = 1000
ROUNDTRIP_PATIENT = "AUSCAT-ROUNDTRIP"
# An 8 x 8 grey ramp: the round trip stores a complete Secondary Capture image, which passes the
# layer's integrity check like any instance must.
ROUNDTRIP_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAI0lEQVR4nGNggAEBKGBQgAIGAyhgcIAChgAo"
    "YEiAAoYCKAAAO1cOAa4O4hwAAAAASUVORK5CYII="
)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FINDINGS = 3


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


def scan(client: Client, rules: Rules) -> dict[str, Any]:
    """Every stored instance that the rules, with the gate on, would refuse; rules and UIDs only, no values."""
    rules = dataclasses.replace(rules, anonymisation=True)
    findings = []
    ids = instance_ids(client)
    for instance in ids:
        try:
            rules.check(client.call("GET", f"/instances/{instance}/file"))
        except Refusal as refused:
            findings.append({"instance": instance, "sop_instance_uid": refused.sop_instance_uid, "rule": refused.rule})
    return {"scanned": len(ids), "refused": len(findings), "rules": rules.describe(), "instances": findings}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-tool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inventory_parser = sub.add_parser("inventory")
    inventory_parser.add_argument("--list", action="store_true", help="include every instance's MD5")
    sub.add_parser("roundtrip")
    sub.add_parser("scan")
    args = parser.parse_args(argv)
    try:
        config = json.loads(MERGED_CONFIG.read_text(encoding="utf-8"))
        client = Client(config)
        if args.command == "inventory":
            result = inventory(client, args.list)
        elif args.command == "roundtrip":
            result = roundtrip(client)
        else:
            result = scan(client, Rules.from_config(config))
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        print(json.dumps({"error": f"{args.command} failed: {error}"}))
        return 1
    print(json.dumps(result))
    return FINDINGS if result.get("refused") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
