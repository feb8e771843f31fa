"""Orthanc Python plugin of the AusCAT layer: malformed instances are refused on every route.

C-STORE goes through an incoming C-STORE filter, which answers the sender with a
failure status. REST uploads and DICOMweb STOW (which the DICOMweb plugin stores
by posting to /instances) go through this plugin's /instances route, which
answers HTTP 400 before Orthanc sees the file. A refusal is logged with the
SOPInstanceUID and the rule, never with attribute values.

Settings (section "AusCAT" of the Orthanc configuration):
    "IntegrityCheck": true   refuse instances whose attributes contradict their pixel data
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import auscat_integrity
import orthanc

# C-STORE "Error: Data Set does not match SOP Class" (PS3.4 Annex B.2.3).
STATUS_DATASET_MISMATCH = 0xA900
STATUS_SUCCESS = 0
ZIP_MAGIC = b"PK\x03\x04"
# Orthanc error codes (OrthancCPlugin.h) a sender can act on, as HTTP statuses; anything else is 500.
HTTP_STATUS_BY_ERROR = {
    4: 503,  # NotEnoughMemory
    14: 507,  # CannotWriteFile
    15: 400,  # BadFileFormat
    19: 507,  # FullStorage
}


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


def filter_c_store(instance, *_: object) -> int:
    """Incoming C-STORE: a failure status for a refused instance, success lets Orthanc store it."""
    if refusal(instance.GetInstanceData(), "C-STORE"):
        return STATUS_DATASET_MISMATCH
    return STATUS_SUCCESS


def _answer_error(output, status: int, message: str) -> None:
    output.SendHttpStatus(status, json.dumps({"HttpStatus": status, "Message": message}))


def _orthanc_error_status(error: Exception) -> int:
    code = error.args[0] if error.args else None
    return HTTP_STATUS_BY_ERROR.get(code, 500) if isinstance(code, int) else 500


def _query(arguments: dict[str, str]) -> str:
    """GET arguments as Orthanc expects them: a flag such as ?expand keeps no '='."""
    parts = [name if value == "" else urlencode({name: value}) for name, value in arguments.items()]
    return "?" + "&".join(parts) if parts else ""


def on_instances(output, uri: str, **request) -> None:
    """/instances: GET lists as Orthanc does; POST stores one DICOM file once it passes the checks."""
    method = request["method"]
    if method == "GET":
        try:
            answer = orthanc.RestApiGet(uri + _query(request.get("get") or {}))
        except Exception as error:  # Orthanc's own refusal, passed on
            _answer_error(output, 400, f"cannot list instances: {error}")
            return
        output.AnswerBuffer(answer, "application/json")
        return
    if method != "POST":
        output.SendMethodNotAllowed("GET,POST")
        return
    body = request["body"]
    if body.startswith(ZIP_MAGIC):
        _answer_error(output, 415, "ZIP archives are not accepted here: upload each DICOM file on its own")
        return
    refused = refusal(body, "REST")
    if refused:
        _answer_error(output, 400, f"instance refused: {refused.rule}")
        return
    try:
        answer = orthanc.RestApiPost(uri, body)
    except Exception as error:  # the sender must learn of any failure to store
        _answer_error(output, _orthanc_error_status(error), f"instance not stored: {error}")
        return
    output.AnswerBuffer(answer, "application/json")


orthanc.RegisterIncomingCStoreInstanceFilter(filter_c_store)
orthanc.RegisterRestCallback("/instances", on_instances)
orthanc.LogWarning(f"auscat: plugin loaded, IntegrityCheck={SETTINGS['IntegrityCheck']}")
