"""The layer's rules for what may be stored, as configured in the "AusCAT" section.

    "AusCAT": {
      "IntegrityCheck": true,            refuse instances whose attributes contradict their pixel data
      "AnonymisationGate": false,        refuse instances not marked de-identified or still identifying
      "IdentifyingAttributes": [...]     keywords the gate refuses when non-empty (default: PS3.15 Annex E)
    }

The plugin applies the rules to every instance Orthanc is about to store; ``auscat_tool scan``
applies the same rules to what is already stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import auscat_anonymity
import auscat_integrity
from auscat_integrity import Refusal


@dataclass(frozen=True)
class Rules:
    integrity: bool = True
    anonymisation: bool = False
    identifying: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Rules:
        section = config.get("AusCAT", {})
        keywords = section.get("IdentifyingAttributes", auscat_anonymity.DEFAULT_IDENTIFYING_ATTRIBUTES)
        return cls(
            integrity=bool(section.get("IntegrityCheck", True)),
            anonymisation=bool(section.get("AnonymisationGate", False)),
            identifying=auscat_anonymity.identifying_tags(keywords),
        )

    def check(self, data: bytes) -> str:
        """Raise Refusal, naming the rule and the SOPInstanceUID, when the file must not be stored.

        Returns the SOPInstanceUID of a file that may be stored ("" when it cannot be read and no rule is on).
        """
        if self.integrity:
            dataset = auscat_integrity.check(data)
        elif self.anonymisation:
            dataset = auscat_integrity.read(data)
        else:
            return auscat_integrity.sop_instance_uid(data)
        if self.anonymisation:
            auscat_anonymity.check(dataset, self.identifying)
        return str(dataset.get("SOPInstanceUID", ""))

    def describe(self) -> str:
        gate = f"on, {len(self.identifying)} identifying attributes" if self.anonymisation else "off"
        return f"IntegrityCheck={self.integrity}, AnonymisationGate={gate}"


__all__ = ["Refusal", "Rules"]
