"""Test-side rewrites of netgen's deploy nets into the forms files from the wild take.

Each function edits the prototxt text the way a training run, a fork or a converter writes it;
none of them calls the converter.  `forward` is the float64 referee (the interpreter, which knows
only BVLC layers: the tests state what a fork layer means by writing its BVLC equivalent).
"""

from __future__ import annotations

import re

import numpy as np

from resnet_port.converters.caffe import CaffeInterpreter, parse_prototxt


def train_snapshot_text(deploy: str, crop: int = 64, eps_at: dict[str, float] | None = None) -> str:
    """The TRAIN net a solver snapshot saves for ``deploy``: a Data layer, use_global_stats false,
    fillers, lr_mult/decay_mult, explicit defaults, the loss and accuracy heads on the labels."""
    text = re.sub(r"input: \"data\"\n(input_dim: \d+\n)+", "", deploy)
    data = (
        'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
        f'transform_param {{ mirror: true crop_size: {crop} mean_value: 104 mean_value: 117 mean_value: 123 }} '
        'data_param { source: "train_lmdb" batch_size: 32 backend: LMDB } }\n'
    )
    text = text.replace('layer {', data + 'layer {', 1)
    text = text.replace("use_global_stats: true", "use_global_stats: false moving_average_fraction: 0.9")
    text = text.replace('type: "Convolution"', 'type: "Convolution" param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }')
    text = text.replace("bias_term: false", 'bias_term: false weight_filler { type: "msra" } dilation: 1 group: 1')
    # conv1 keeps its bias, now written out explicitly (the default) with a filler.
    text = text.replace("stride: 2  }", 'stride: 2 bias_term: true bias_filler { type: "constant" value: 0 } }', 1)
    text = text.replace("scale_param { bias_term: true }", "scale_param { bias_term: true filler { value: 1 } axis: 1 }")
    text = text.replace("pool: AVE }", "pool: AVE pad: 0 }")
    for name, eps in (eps_at or {}).items():
        text = re.sub(rf'(name: "{re.escape(name)}" type: "BatchNorm".*?batch_norm_param {{)', rf"\1 eps: {eps}", text)
    text = text.replace(
        'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob"  }',
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
        'layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include { phase: TEST } }',
    )
    assert "SoftmaxWithLoss" in text
    return text


def logits(text: str, blobs: dict, x: np.ndarray, output: str = "fc") -> np.ndarray:
    """The float64 interpreter's value of ``output`` for the BVLC net ``text``."""
    net = parse_prototxt(text)
    return CaffeInterpreter(net, blobs).forward({"data": x})[output].numpy()


def rel(reference: np.ndarray, ours) -> float:
    reference = np.asarray(reference, np.float64)
    ours = np.asarray(ours, np.float64).reshape(reference.shape)
    return float(np.abs(reference - ours).max() / np.abs(reference).max())


def seeded(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-120.0, 135.0, size=shape).astype(np.float32)
