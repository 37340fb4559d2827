"""`audit`: compare two ports of one network and name the porting bug that makes them differ.

Public API: `load_side(label, path, SideOptions)`, `audit(a, b, images, rtol)` -> `AuditResult`,
`seeded_images`, `load_images`, `CAUSE_KEYS`.  The command is `audit A B` (`audit.cli`).
"""

from audit.causes import CAUSE_KEYS, HYPOTHESES
from audit.diagnose import DEFAULT_RTOL, AuditResult, audit
from audit.inputs import load_images, preprocess, seeded_images
from audit.sources import Side, SideOptions, file_kind, load_side

__all__ = [
    "CAUSE_KEYS",
    "DEFAULT_RTOL",
    "HYPOTHESES",
    "AuditResult",
    "Side",
    "SideOptions",
    "audit",
    "file_kind",
    "load_images",
    "load_side",
    "preprocess",
    "seeded_images",
]
