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
operating-system thread (``threading.get_ident``). Orthanc Explorer gets a banner that shows a refused
request (``auscat_explorer.js``).

The Python plugin takes Python's lock for each call with ``PyGILState_Ensure`` and lets it go with
``PyGILState_Release``; on one of Orthanc's threads, which Python did not start, that makes and destroys a Python
thread state each time, which cost more than the access filter's own work. Each callback therefore first keeps its
thread's state (``keep_thread_state``): one ``PyGILState_Ensure`` more, never released, so that the plugin's release
gives up the lock but keeps the state for the thread's next call. Orthanc's threads are pools that live as long as
the process, so the states kept are a few dozen.

The callbacks call nothing in Orthanc but its log and the instance handed to them: this plugin version keeps Python's
global lock during calls into Orthanc, and a callback that stored or read through the
REST API would deadlock against a C-STORE waiting for that lock inside Orthanc's store.
"""

from __future__ import annotations

import ctypes
import json
import threading
from pathlib import Path

import orthanc
from auscat_access import METHODS, Access, http_line, http_record
from auscat_audit import AuditPipe, instance_line, open_trail
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
# The HTTP decision as the audit takes it: a short record for the log reader, or the JSON line for the files.
HTTP_AUDIT = http_record if isinstance(AUDIT, AuditPipe) else http_line
# The threads whose Python thread state is kept (keep_thread_state).
KEPT_STATES: set[int] = set()


def keep_thread_state() -> None:
    """Keep this thread's Python thread state after the plugin releases the lock (see the module's text)."""
    ident = threading.get_ident()
    if ident not in KEPT_STATES:
        KEPT_STATES.add(ident)
        ctypes.pythonapi.PyGILState_Ensure()


def http_request(route: str) -> tuple[str, str]:
    """The user and client address of the HTTP request this thread serves; none for a C-STORE."""
    return ("", "") if route == "C-STORE" else REQUESTS.get(threading.get_ident(), ("", ""))


def on_received_instance(data: bytes, origin) -> tuple:
    """Keep an instance as it is, or make its store fail."""
    keep_thread_state()
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
    keep_thread_state()
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
    keep_thread_state()
    method = METHODS.get(int(request.get("method", 0)), "OTHER")
    try:
        decision = ACCESS.decide(method, uri, request.get("headers") or {})
        client = str(request.get("ip", ""))
        REQUESTS[threading.get_ident()] = (decision.user, client)
        AUDIT.write(HTTP_AUDIT(decision, method, uri, client))
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
