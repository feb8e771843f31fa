"""Orthanc Python plugin of the AusCAT layer: the layer's rules hold on every route.

Every instance Orthanc is about to store (C-STORE, REST, DICOMweb STOW, or made by
Orthanc itself) passes through the received-instance callback, which applies the rules
of ``auscat_rules`` (integrity check, anonymisation gate). A refused instance is replaced
by bytes Orthanc cannot parse, so the store fails and the sender gets a failure:
discarding it instead would be reported to the sender as a success. A refusal is logged
with the SOPInstanceUID and the rule, never with attribute values.

The callback calls nothing in Orthanc but its log: this plugin version keeps Python's
global lock during calls into Orthanc, and a callback that stored or read through the
REST API would deadlock against a C-STORE waiting for that lock inside Orthanc's store.
"""

from __future__ import annotations

import json

import orthanc
from auscat_rules import Refusal, Rules

UNPARSABLE = b"AUSCAT-REFUSED"
# OrthancPluginInstanceOrigin, for the log line.
ORIGINS = {1: "unknown", 2: "C-STORE", 3: "REST", 4: "plugin (DICOMweb STOW)", 5: "Lua", 6: "WebDAV"}

RULES = Rules.from_config(json.loads(orthanc.GetConfiguration()))


def on_received_instance(data: bytes, origin) -> tuple:
    """Keep an instance as it is, or make its store fail."""
    try:
        RULES.check(data)
    except Refusal as refused:
        route = ORIGINS.get(int(origin), "unknown")
        orthanc.LogWarning(
            f"auscat: refused {route} instance {refused.sop_instance_uid or '(no SOPInstanceUID)'}: {refused.rule}"
        )
        return orthanc.ReceivedInstanceAction.MODIFY, UNPARSABLE
    return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None


orthanc.RegisterReceivedInstanceCallback(on_received_instance)
orthanc.LogWarning(f"auscat: plugin loaded, {RULES.describe()}")
