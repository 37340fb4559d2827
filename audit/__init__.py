"""`audit`: compare two ports of one network and name the porting bug that makes them differ.

Public API: `load_side(label, path, SideOptions)`, `audit(a, b, inputs, rtol)` -> `AuditResult`,
`seeded_inputs`, `image_folder_inputs`, `CAUSE_KEYS`; `compare_layers(a, b, inputs, mode)` ->
`LayerComparison` (where the two part, module by module); `render_html(result)` lives in
`audit.html_page` (needs matplotlib).  The command is `audit A B` (`audit.cli`).
"""

from resnet_port.audit.causes import CAUSE_KEYS, HYPOTHESES
from resnet_port.audit.diagnose import DEFAULT_RTOL, AuditResult, audit
from resnet_port.audit.layers import LAYER_MODES, LayerComparison, compare_layers
from resnet_port.audit.inputs import InputSet, image_folder_inputs, preprocess, seeded_images, seeded_inputs
from resnet_port.audit.sources import Side, SideOptions, file_kind, load_side

__all__ = [
    "CAUSE_KEYS",
    "DEFAULT_RTOL",
    "HYPOTHESES",
    "LAYER_MODES",
    "AuditResult",
    "LayerComparison",
    "InputSet",
    "Side",
    "SideOptions",
    "audit",
    "compare_layers",
    "file_kind",
    "image_folder_inputs",
    "load_side",
    "preprocess",
    "seeded_images",
    "seeded_inputs",
]
