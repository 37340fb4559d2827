"""The fallback referee (the graph evaluated node by node in torch) against onnxruntime itself."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_port.converters.onnx.graph import read_graph
from resnet_port.converters.onnx.interpret import run_graph
from tests.onnx.conftest import rel_diff


@pytest.mark.parametrize(
    "options",
    [
        {"depth": 18, "residual": "v1", "classifier": "matmul_add"},
        {"depth": 50, "residual": "v2", "stem_pool": "max_ceil", "size": 40, "flatten": "reshape_constant"},
        {"depth": 34, "residual": "v2", "data_gamma": np.array([0.5, -2.0, 1.0], np.float32), "opset": 7},
        {"depth": 50, "residual": "v1", "classifier": "gemm_transposed_scaled", "stride_in": "3x3"},
    ],
)
def test_graph_evaluation_matches_onnxruntime(build, options):
    net = build(**options)
    assert rel_diff(net.logits, run_graph(read_graph(net.path), net.x)) <= 1e-5


def test_a_graph_read_out_of_order_is_refused(build):
    def swap(nodes, inits):
        nodes[1], nodes[2] = nodes[2], nodes[1]

    net = build(depth=18, mutate=swap, run=False)
    from resnet_port.errors import ConversionError

    with pytest.raises(ConversionError, match="before anything computes it"):
        run_graph(read_graph(net.path), net.x)
