"""Filters that turn the role's variables into Orthanc configuration."""

from __future__ import annotations

import ipaddress
from typing import Any

MAX_AET_LENGTH = 16


def orthanc_modality_problems(modalities: Any) -> list[str]:
    """What is wrong with orthanc_dicom_modalities, naming the entry and field."""
    if not isinstance(modalities, dict):
        return ["orthanc_dicom_modalities must be a mapping of names to {aet, host, port}"]
    problems = []
    for name, modality in modalities.items():
        where = f"orthanc_dicom_modalities.{name}"
        if not isinstance(modality, dict):
            problems.append(f"{where} must be a mapping with aet, host and port")
            continue
        aet = modality.get("aet")
        if not isinstance(aet, str) or not 0 < len(aet) <= MAX_AET_LENGTH:
            problems.append(f"{where}.aet must be an AE title of 1 to {MAX_AET_LENGTH} characters")
        try:
            ipaddress.ip_address(str(modality.get("host", "")))
        except ValueError:
            problems.append(f"{where}.host must be the sender's IP address (Orthanc compares it with the connection's)")
        port = modality.get("port", 104)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            problems.append(f"{where}.port must be a port number")
    return problems


def orthanc_modalities(modalities: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """DicomModalities: each sender may echo and store, nothing else."""
    return {
        name: {
            "AET": modality["aet"],
            "Host": str(modality["host"]),
            "Port": modality.get("port", 104),
            "AllowEcho": True,
            "AllowStore": True,
            "AllowFind": False,
            "AllowFindWorklist": False,
            "AllowGet": False,
            "AllowMove": False,
            "AllowStorageCommitment": False,
        }
        for name, modality in modalities.items()
    }


def orthanc_user_problems(users: list[dict[str, Any]], registered: dict[str, str]) -> list[str]:
    """What is wrong with orthanc_users against orthanc_registered_users, naming the user.

    Role names are checked by the image's configuration check, which reads the role table."""
    names = [str(user.get("name", "")) for user in users]
    problems = [f"user {name!r} is listed more than once" for name in dict.fromkeys(names) if names.count(name) > 1]
    problems += [
        f"user {name!r} has no password in orthanc_registered_users"
        for name in dict.fromkeys(names)
        if name not in registered
    ]
    problems += [f"user {name!r} of orthanc_registered_users has no role" for name in registered if name not in names]
    if users and not any(user.get("role") == "admin" for user in users):
        problems.append("no user has the role 'admin': nobody could administer the server")
    return problems


def orthanc_roles(users: list[dict[str, Any]]) -> dict[str, str]:
    """AusCAT.Roles: each user's role."""
    return {str(user["name"]): str(user["role"]) for user in users}


class FilterModule:
    def filters(self) -> dict:
        return {
            "orthanc_modality_problems": orthanc_modality_problems,
            "orthanc_modalities": orthanc_modalities,
            "orthanc_user_problems": orthanc_user_problems,
            "orthanc_roles": orthanc_roles,
        }
