"""Caffe's referee: the independent float64 interpreter of the Caffe graph, on seeded inputs.

The interpreter runs the Caffe graph itself in float64 (interpreter.py); the shared contract
(converters/verify.py) runs the converted model in float32 beside it, applies the tolerance and
records the figures in ``metadata.verification``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_port.converters.caffe.interpreter import CaffeInterpreter
from resnet_port.converters.common import PARITY_RTOL, Conversion
from resnet_port.converters.verify import Referee, verify

VERIFY_BATCH = 2
REFEREE = "the independent Caffe-graph interpreter (float64)"


def seeded_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Mean-subtracted 0-255 BGR-like values: uniform in [-120, 135], as Caffe's ``data`` blob sees."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-120.0, 135.0, size=shape).astype(np.float32)


def caffe_referee(
    conversion: Conversion, net: Any, model: Any, input_shape: tuple[int, ...] | None, rgb: bool, seed: int = 0,
    progress: bool = False, filter_phase: bool = True,
) -> Referee:
    """The interpreter on a seeded input of the net's own size (224 when the net does not say)."""
    details = conversion.metadata.source.details
    modules = details["blob_modules"]
    logits_blob = next(blob for blob, module in modules.items() if module == "fc")
    height, width = (input_shape[2], input_shape[3]) if input_shape and len(input_shape) == 4 else (224, 224)
    x = seeded_input((VERIFY_BATCH, conversion.spec.in_chans, height, width), seed)
    interpreter = CaffeInterpreter(net, model.blobs, filter_phase=filter_phase)

    def logits(batch: np.ndarray) -> np.ndarray:
        return interpreter.forward({details["input_blob"]: batch}, progress=progress)[logits_blob].numpy()

    return Referee(
        name=REFEREE,
        input=x,
        logits=logits,
        input_description=f"seeded uniform [-120, 135], seed {seed}, shape {list(x.shape)}"
        + (" (channels reversed for the RGB model)" if rgb else ""),
        output=logits_blob,
        model_input=x[:, ::-1].copy() if rgb else None,
    )


def verify_conversion(
    conversion: Conversion, net: Any, model: Any, input_shape: tuple[int, ...] | None, rgb: bool, seed: int = 0,
    progress: bool = False, filter_phase: bool = True, tolerance: float = PARITY_RTOL, where: str = "",
) -> dict[str, Any]:
    """Run the contract with the interpreter as referee; raises `VerificationFailed` beyond ``tolerance``."""
    referee = caffe_referee(conversion, net, model, input_shape, rgb, seed, progress, filter_phase)
    return verify(conversion, referee, tolerance, where=where)


__all__ = ["caffe_referee", "seeded_input", "verify_conversion"]
