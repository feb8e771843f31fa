"""Orthanc Python plugin of the AusCAT layer: the layer's rules hold on every route.

Every instance Orthanc is about to store (C-STORE, REST, DICOMweb STOW, or made by
Orthanc itself) passes through the received-instance callback, which applies the rules
of ``auscat_rules`` (integrity check, anonymisation gate). A refused instance is replaced
by bytes Orthanc cannot parse, so the store fails and the sender gets a failure:
discarding it instead would be reported to the sender as a success. A refusal is logged
with the SOPInstanceUID and the rule, never with attribute values.

Every HTTP request that passed Orthanc's login goes through the incoming-request filter, which allows it only
when the user's role lists the method and path (``auscat_access``), and writes the decision to the audit trail
(``auscat_audit``, through the entrypoint's log reader). A failure inside the filter denies the request (403)
rather than letting it through.
Every instance stored or refused leaves an audit line too: a stored one with the calling AE, address and user
Orthanc recorded for it, a refused one with the rule, and with the user and address of the HTTP request that
carried it (the filter runs in the same thread just before). What one callback leaves for the next is kept per
operating-system thread: the plugin gives each call a fresh Python thread state, so ``threading.local`` would
forget it between two callbacks. Orthanc Explorer gets a banner that shows a refused
request (``auscat_explorer.js``).

The callbacks call nothing in Orthanc but its log and the instance handed to them: this plugin version keeps Python's
global lock during calls into Orthanc, and a callback that stored or read through the
REST API would deadlock against a C-STORE waiting for that lock inside Orthanc's store.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import orthanc
from auscat_access import METHODS, Access, http_line
from auscat_audit import instance_line, open_trail
from auscat_rules import Refusal, Rules

UNPARSABLE = b"AUSCAT-REFUSED"
# OrthancPluginInstanceOrigin, for the log line.
ORIGINS = {1: "unknown", 2: "C-STORE", 3: "REST", 4: "plugin (DICOMweb STOW)", 5: "Lua", 6: "WebDAV"}

CONFIG = json.loads(orthanc.GetConfiguration())
RULES = Rules.from_config(CONFIG)
ACCESS = Access.from_config(CONFIG)
AUDIT = open_trail(CONFIG)
# Per Orthanc thread (threading.get_ident): the HTTP request being served, and the SOPInstanceUID the rules read
# before the store. One entry per thread Orthanc has, overwritten by the thread's next request or instance.
REQUESTS: dict[int, tuple[str, str]] = {}
SOP_INSTANCE_UIDS: dict[int, str] = {}


def http_request(route: str) -> tuple[str, str]:
    """The user and client address of the HTTP request this thread serves; none for a C-STORE."""
    return ("", "") if route == "C-STORE" else REQUESTS.get(threading.get_ident(), ("", ""))


def on_received_instance(data: bytes, origin) -> tuple:
    """Keep an instance as it is, or make its store fail."""
    route = ORIGINS.get(int(origin), "unknown")
    SOP_INSTANCE_UIDS[threading.get_ident()] = ""
    try:
        SOP_INSTANCE_UIDS[threading.get_ident()] = RULES.check(data)
    except Refusal as refused:
        uid = refused.sop_instance_uid or "(no SOPInstanceUID)"
        orthanc.LogWarning(f"auscat: refused {route} instance {uid}: {refused.rule}")
        user, client = http_request(route)
        try:  # the refusal stands whatever happens to its audit line
            AUDIT.write(instance_line("refused", route, refused.sop_instance_uid, user=user, client=client,
                                      why=refused.rule))  # fmt: skip
        except Exception as error:
            orthanc.LogError(f"auscat: audit line of refused instance {uid} not written: {error!r}")
        return orthanc.ReceivedInstanceAction.MODIFY, UNPARSABLE
    return orthanc.ReceivedInstanceAction.KEEP_AS_IS, None


def on_stored_instance(instance, instance_id: str) -> None:
    """Audit a stored instance with what Orthanc recorded of its sender."""
    metadata = {key: instance.GetInstanceMetadata(key) or "" for key in ("RemoteIP", "CalledAET", "HttpUsername")}
    route = ORIGINS.get(int(instance.GetInstanceOrigin()), "unknown")
    user, client = http_request(route)
    AUDIT.write(
        instance_line(
            "stored",
            route,
            SOP_INSTANCE_UIDS.get(threading.get_ident(), ""),
            instance_id=instance_id,
            calling_aet=(instance.GetInstanceRemoteAet() or "") if route == "C-STORE" else "",
            called_aet=metadata["CalledAET"],
            client=metadata["RemoteIP"] or client,
            user=metadata["HttpUsername"] or user,
        )
    )


def on_http_request(uri: str, **request) -> bool:
    """Allow a request only when the user's role lists it; audit the decision."""
    method = METHODS.get(int(request.get("method", 0)), "OTHER")
    try:
        decision = ACCESS.decide(method, uri, request.get("headers") or {})
        client = str(request.get("ip", ""))
        REQUESTS[threading.get_ident()] = (decision.user, client)
        AUDIT.write(http_line(decision, method, uri, client))
    except Exception as error:  # any failure denies, and Orthanc needs a bool back
        orthanc.LogError(f"auscat: access filter failed on {method} {uri}, denied: {error!r}")
        return False
    return decision.allowed


orthanc.RegisterReceivedInstanceCallback(on_received_instance)
if ACCESS.enforced:
    orthanc.RegisterIncomingHttpRequestFilter(on_http_request)
    EXPLORER_SCRIPT = (Path(__file__).parent / "auscat_explorer.js").read_text(encoding="utf-8")
    if hasattr(orthanc, "ExtendOrthancExplorer2"):  # the name is the Python plugin's, which loads this script
        orthanc.ExtendOrthancExplorer2("python", EXPLORER_SCRIPT)
    else:
        orthanc.ExtendOrthancExplorer(EXPLORER_SCRIPT)
orthanc.RegisterOnStoredInstanceCallback(on_stored_instance)
orthanc.LogWarning(f"auscat: plugin loaded, {RULES.describe()}, {ACCESS.describe()}, audit in {AUDIT.path}")
