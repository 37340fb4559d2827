"""``--verify``: the converted model beside the independent interpreter, on seeded inputs.

The interpreter runs the Caffe graph itself in float64 (interpreter.py); the converted model runs
in float32 as users will run it.  The figures go into ``metadata.verification``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_port.converters.caffe.interpreter import CaffeInterpreter
from resnet_port.converters.common import Conversion, compare_logits, run_converted

VERIFY_BATCH = 2


def seeded_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Mean-subtracted 0-255 BGR-like values: uniform in [-120, 135], as Caffe's ``data`` blob sees."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-120.0, 135.0, size=shape).astype(np.float32)


def verify_conversion(
    conversion: Conversion, net: Any, model: Any, input_shape: tuple[int, ...] | None, rgb: bool, seed: int = 0,
    progress: bool = False, filter_phase: bool = True,
) -> dict[str, Any]:
    details = conversion.metadata.source.details
    modules = details["blob_modules"]
    logits_blob = next(blob for blob, module in modules.items() if module == "fc")
    height, width = (input_shape[2], input_shape[3]) if input_shape and len(input_shape) == 4 else (224, 224)
    x = seeded_input((VERIFY_BATCH, conversion.spec.in_chans, height, width), seed)
    reference = CaffeInterpreter(net, model.blobs, filter_phase=filter_phase).forward({details["input_blob"]: x}, progress=progress)[logits_blob]
    ours = run_converted(conversion, x[:, ::-1].copy() if rgb else x)
    figures = compare_logits(reference.numpy(), ours)
    figures.update(
        {
            "method": "independent Caffe-graph interpreter (float64) vs converted model (float32)",
            "input": f"seeded uniform [-120, 135], seed {seed}, shape {list(x.shape)}"
            + (" (channels reversed for the RGB model)" if rgb else ""),
            "output_blob": logits_blob,
        }
    )
    return figures


__all__ = ["seeded_input", "verify_conversion"]
