"""Orthanc Python plugin of the AusCAT layer: malformed instances are refused on every route.

Every instance Orthanc is about to store (C-STORE, REST, DICOMweb STOW, or made by
Orthanc itself) passes through the received-instance callback. A refused instance
is replaced by bytes Orthanc cannot parse, so the store fails and the sender gets a
failure: discarding it instead would be reported to the sender as a success.
A refusal is logged with the SOPInstanceUID and the rule, never with attribute values.

The callback calls nothing in Orthanc but its log: this plugin version keeps Python's
global lock during calls into Orthanc, and a callback that stored or read through the
REST API would deadlock against a C-STORE waiting for that lock inside Orthanc's store.

Settings (section "AusCAT" of the Orthanc configuration):
    "IntegrityCheck": true   refuse instances whose attributes contradict their pixel data
"""

from __future__ import annotations

import json

import auscat_integrity
import orthanc

UNPARSABLE = b"AUSCAT-REFUSED"
# OrthancPluginInstanceOrigin, for the log line.
ORIGINS = {1: "unknown", 2: "C-STORE", 3: "REST", 4: "plugin (DICOMweb STOW)", 5: "Lua", 6: "WebDAV"}


def settings() -> dict:
    section = json.loads(orthanc.GetConfiguration()).get("AusCAT", {})
    return {"IntegrityCheck": bool(section.get("IntegrityCheck", True))}


SETTINGS = settings()


def refusal(data: bytes, route: str) -> auscat_integrity.Refusal | None:
    """The reason this file must not be stored, logged once; None when it may be."""
    if not SETTINGS["IntegrityCheck"]:
        return None
    try:
        auscat_integrity.check(data)
    except auscat_integrity.Refusal as refused:
        orthanc.LogWarning(
            f"auscat: refused {route} instance {refused.sop_instance_uid or '(no SOPInstanceUID)'}: {refused.rule}"
        )
        return refused
    return None


def on_received_instance(data: bytes, origin) -> tuple:
    """Keep an instance as it is, or make its store fail."""
    if refusal(data, ORIGINS.get(int(origin), "unknown")):
        return orthanc.ReceivedInstanceAction.MODIFY, UNPARSABLE
    return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None


orthanc.RegisterReceivedInstanceCallback(on_received_instance)
orthanc.LogWarning(f"auscat: plugin loaded, IntegrityCheck={SETTINGS['IntegrityCheck']}")
