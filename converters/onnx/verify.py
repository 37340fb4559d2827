"""The numeric check every ONNX conversion ends with: the file run by a referee vs the port.

The referee is onnxruntime: the ONNX file, not the framework that wrote it, is the source, so the
port must compute what an ONNX runtime computes on that file.  The converter itself needs only
`onnx`; without onnxruntime the graph is evaluated node by node in torch (`interpret.run_graph`),
which follows the file's own wiring independently of the recogniser, and the report says which
referee was used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnet_port.converters.common import PARITY_RTOL, Conversion
from resnet_port.converters.verify import Referee, verify
from resnet_port.converters.onnx.graph import read_graph
from resnet_port.converters.onnx.interpret import run_graph

DEFAULT_TOLERANCE = PARITY_RTOL
DEFAULT_SIZE = 224


def probe_input(shape: tuple[int | str, ...], samples: int = 2, seed: int = 0) -> np.ndarray:
    """A seeded input of the graph's own shape (symbolic dimensions: ``samples`` x 224 x 224)."""
    batch, channels, height, width = (d if isinstance(d, int) and d > 0 else None for d in shape)
    size = (batch or samples, channels or 3, height or DEFAULT_SIZE, width or DEFAULT_SIZE)
    return np.random.default_rng(seed).standard_normal(size, dtype=np.float32)


def onnxruntime_logits(path: str | Path, input_name: str, x: np.ndarray, output: str | None = None) -> np.ndarray:
    """The graph's first output on ``x``, or the tensor ``output`` (the logits before a Softmax the
    converter dropped), made a graph output of an in-memory copy of the model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # old exporters list initializers as inputs; ORT warns once per tensor
    source: str | bytes = str(path)
    if output is not None:
        import onnx

        model = onnx.load(str(path))
        if output not in [o.name for o in model.graph.output]:
            model.graph.output.insert(0, onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
            source = model.SerializeToString()
    session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run([output] if output is not None else None, {input_name: x})[0]


SPATIAL0_REFEREE = (
    "the ONNX graph evaluated node by node in torch float64 (BatchNormalization spatial=0 read per channel, "
    "as MXNet ran the pre-2020 zoo files; onnxruntime refuses such nodes)"
)


def _has_spatial_zero(path: str | Path) -> bool:
    graph = read_graph(path)
    return any(n.op_type == "BatchNormalization" and n.attrs.get("spatial", 1) == 0 for n in graph.nodes)


def reference_logits(path: str | Path, input_name: str, x: np.ndarray, output: str | None = None) -> tuple[np.ndarray, str]:
    """(output, referee): onnxruntime when installed and able to run the file, else the torch
    evaluation of the graph; ``output`` names the tensor to return (default: the graph output)."""
    if _has_spatial_zero(path):
        return run_graph(read_graph(path), x, output), SPATIAL0_REFEREE
    try:
        import onnxruntime
    except ImportError:
        referee = "the ONNX graph evaluated node by node in torch float64 (onnxruntime is not installed)"
        return run_graph(read_graph(path), x, output), referee
    return onnxruntime_logits(path, input_name, x, output), f"onnxruntime {onnxruntime.__version__}"


def onnx_referee(conversion: Conversion, path: str | Path, seed: int = 0) -> Referee:
    """onnxruntime (or the torch node evaluator) on a seeded input of the graph's own shape."""
    details = conversion.metadata.source.details
    x = probe_input(tuple(details["input_shape"]), seed=seed)
    return Referee(
        name=SPATIAL0_REFEREE if details.get("spatial0_batchnorms") else _referee_name(),
        input=x,
        logits=lambda batch: reference_logits(path, details["input"], batch, details.get("output"))[0],
        input_description=f"standard normal, seed {seed}, shape {list(x.shape)}",
        output=details.get("output"),
    )


def _referee_name() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "the ONNX graph evaluated node by node in torch float64 (onnxruntime is not installed)"
    return f"onnxruntime {onnxruntime.__version__}"


def verify_conversion(
    conversion: Conversion, path: str | Path, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0
) -> dict[str, Any]:
    """Compare the port with the referee on a seeded input (converters/verify.py's contract): the
    record goes into the metadata; beyond ``tolerance`` it raises `VerificationFailed`."""
    return verify(conversion, onnx_referee(conversion, path, seed), tolerance, where=str(path))
