"""Checks run inside the Orthanc container by the lifecycle playbooks.

    inventory [--list]  counts at each level and a digest over every instance's stored MD5
    attachments         the UUID of every attachment the index refers to, one per line
    roundtrip           create an instance through REST, read it back, compare, delete it
    scan                apply the layer's rules, with the anonymisation gate on, to every stored
                        instance and list those that would be refused today (exit status 3)
    audit --resource ID       who accessed a patient, study, series or instance (Orthanc ID or DICOM UID),
                              its parts or the resources it is part of, from the audit trail
    audit --user NAME [--since T] [--until T]
                              what a user downloaded between two times (ISO 8601, UTC)

Inventory, attachments and scan read Orthanc's index a thousand instances per request
(/tools/find with the attachments in the answer), never one request per instance; the
scan then reads each DICOM file from the storage directory. Each prints one JSON object
(attachments: lines) and exits non-zero when Orthanc does not answer as expected.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
import urllib.error
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import auscat_access
import auscat_audit
from auscat_client import MERGED_CONFIG, Client
from auscat_rules import Refusal, Rules

# Resources per /tools/find request. Each page is asked for by offset (Since), which makes the index
# step over every resource before it: fewer, larger pages cost less. Never more than the
# configuration's LimitFindInstances (instance level) or LimitFindResults (other levels) allow.
PAGE = 10_000
ROUNDTRIP_PATIENT = "AUSCAT-ROUNDTRIP"
# An 8 x 8 grey ramp: the round trip stores a complete Secondary Capture image, which passes the
# layer's integrity check like any instance must.
ROUNDTRIP_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAI0lEQVR4nGNggAEBKGBQgAIGAyhgcIAChgAo"
    "YEiAAoYCKAAAO1cOAa4O4hwAAAAASUVORK5CYII="
)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FINDINGS = 3
DICOM_ATTACHMENT = 1
LEVELS = ("Patient", "Study", "Series", "Instance")
STORAGE = "/var/lib/orthanc/db"


@dataclasses.dataclass(frozen=True)
class Attachment:
    uuid: str
    content_type: int
    md5: str
    compressed: bool


def page_size(config: dict[str, Any], level: str) -> int:
    limit = int(config.get("LimitFindInstances" if level == "Instance" else "LimitFindResults", 0) or 0)
    return min(PAGE, limit) if limit > 0 else PAGE


def indexed_instances(
    client: Client, config: dict[str, Any], level: str = "Instance"
) -> Iterator[tuple[str, list[Attachment]]]:
    """(Orthanc ID, attachments) of every resource of a level, read from the index a page at a time."""
    size = page_size(config, level)
    since = 0
    while True:
        page = client.json(
            "POST",
            "/tools/find",
            {"Level": level, "Query": {}, "ResponseContent": ["Attachments"], "Since": since, "Limit": size},
        )
        for found in page:
            attachments = [
                Attachment(
                    uuid=item["Uuid"],
                    content_type=int(item["ContentType"]),
                    md5=item["UncompressedMD5"],
                    compressed=item["CompressedSize"] != item["UncompressedSize"]
                    or item["CompressedMD5"] != item["UncompressedMD5"],
                )
                for item in found.get("Attachments", [])
            ]
            yield found["ID"], attachments
        if len(page) < size:
            return
        since += len(page)


def dicom_attachment(instance: str, attachments: list[Attachment]) -> Attachment:
    for attachment in attachments:
        if attachment.content_type == DICOM_ATTACHMENT:
            return attachment
    raise ValueError(f"instance {instance} has no DICOM attachment in the index")


def inventory(client: Client, config: dict[str, Any], with_list: bool) -> dict[str, Any]:
    statistics = client.json("GET", "/statistics")
    md5 = {
        instance: dicom_attachment(instance, attachments).md5
        for instance, attachments in indexed_instances(client, config)
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


def attachments(client: Client, config: dict[str, Any]) -> int:
    """Attachments live at every level: the DICOMweb plugin, for one, caches series metadata as one."""
    count = 0
    for level in LEVELS:
        for _, found in indexed_instances(client, config, level):
            for attachment in found:
                print(attachment.uuid)
                count += 1
    return count


def stored_path(storage: Path, uuid: str) -> Path:
    """Orthanc's storage layout: <dir>/<uuid[0:2]>/<uuid[2:4]>/<uuid>."""
    return storage / uuid[0:2] / uuid[2:4] / uuid


def read_stored(storage: Path, attachment: Attachment) -> bytes:
    data = stored_path(storage, attachment.uuid).read_bytes()
    if attachment.compressed:
        # StorageCompression: an 8-byte little-endian uncompressed size, then a zlib stream.
        data = zlib.decompress(data[8:])
    return data


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


def scan(client: Client, config: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """Every stored instance that the rules, with the gate on, would refuse; rules and UIDs only, no values."""
    rules = dataclasses.replace(rules, anonymisation=True)
    storage = Path(config.get("StorageDirectory", STORAGE))
    findings = []
    scanned = 0
    for instance, found in indexed_instances(client, config):
        scanned += 1
        try:
            rules.check(read_stored(storage, dicom_attachment(instance, found)))
        except OSError as error:
            findings.append({"instance": instance, "sop_instance_uid": "", "rule": f"stored file unreadable: {error}"})
        except Refusal as refused:
            findings.append({"instance": instance, "sop_instance_uid": refused.sop_instance_uid, "rule": refused.rule})
    return {"scanned": scanned, "refused": len(findings), "rules": rules.describe(), "instances": findings}


CHILDREN = {"patients": ("studies", "series", "instances"), "studies": ("series", "instances"),
            "series": ("instances",), "instances": ()}  # fmt: skip
PARENTS = {"studies": ("ParentPatient",), "series": ("ParentStudy", "ParentPatient"),
           "instances": ("ParentSeries", "ParentStudy", "ParentPatient")}  # fmt: skip
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def related(client: Client, resource: str) -> tuple[dict[str, str], set[str], set[str]]:
    """The resource a name (Orthanc ID or DICOM UID) designates, with the Orthanc IDs and DICOM UIDs of its
    parts and of the resources it is part of (a patient's archive holds its studies). A resource no longer
    in the index (deleted) is matched by its name alone."""
    ids, uids = {resource}, {resource}
    if resource.replace(".", "").isdigit():  # a DICOM UID: the resource Orthanc has under it, if any
        for match in json.loads(client.send("POST", "/tools/lookup", resource.encode()) or b"[]"):
            resource = match["ID"]
            ids.add(resource)
            break
    for level in CHILDREN:
        try:
            described = client.json("GET", f"/{level}/{resource}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                continue
            raise
        for child in CHILDREN[level]:
            for part in client.json("GET", f"/{level}/{resource}/{child}"):
                ids.add(part["ID"])
                uids.update(part.get("MainDicomTags", {}).get(tag, "") for tag in UID_TAGS)
        ids.update(described[key] for key in PARENTS.get(level, ()) if key in described)
        uids.update(described.get("MainDicomTags", {}).get(tag, "") for tag in UID_TAGS)
        uids.discard("")
        return {"level": auscat_access.LEVELS[level], "id": resource}, ids, uids
    return {"level": "not in the index", "id": resource}, ids, uids


def audit(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    lines = auscat_audit.read_lines()
    if args.resource:
        described, ids, uids = related(client, args.resource)
        return {"resource": described, **auscat_audit.who_accessed(lines, ids, uids)}
    return auscat_audit.downloads_of(lines, args.user, args.since, args.until)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auscat-tool", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inventory_parser = sub.add_parser("inventory")
    inventory_parser.add_argument("--list", action="store_true", help="include every instance's MD5")
    sub.add_parser("attachments")
    sub.add_parser("roundtrip")
    sub.add_parser("scan")
    audit_parser = sub.add_parser("audit")
    asked = audit_parser.add_mutually_exclusive_group(required=True)
    asked.add_argument("--resource", help="Orthanc ID or DICOM UID of a patient, study, series or instance")
    asked.add_argument("--user", help="a user of RegisteredUsers")
    audit_parser.add_argument("--since", default="", help="ISO 8601 UTC time or date, inclusive")
    audit_parser.add_argument("--until", default="", help="ISO 8601 UTC time or date, exclusive")
    args = parser.parse_args(argv)
    try:
        config = json.loads(MERGED_CONFIG.read_text(encoding="utf-8"))
        client = Client(config)
        if args.command == "inventory":
            result = inventory(client, config, args.list)
        elif args.command == "attachments":
            attachments(client, config)
            return 0
        elif args.command == "roundtrip":
            result = roundtrip(client)
        elif args.command == "audit":
            result = audit(client, args)
        else:
            result = scan(client, config, Rules.from_config(config))
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        print(json.dumps({"error": f"{args.command} failed: {error}"}))
        return 1
    print(json.dumps(result))
    return FINDINGS if result.get("refused") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
