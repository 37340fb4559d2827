"""Test-side makers of Caffe nets and weights, written apart from the converter.

`resnet_prototxt` writes a post-activation ResNet in the release's own naming scheme (conv1,
bn_conv1, scale_conv1, res2a_branch1, res2a_branch2a, res2a, pool5, ...), small enough to run in
milliseconds; `weights_for` makes seeded weights of the right shapes for any such net by tracking
channels through its layers.
"""

from __future__ import annotations

import string

import numpy as np

BN_FACTOR = np.float32(999.982)


def _layer(name, type_, bottom, top, body=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top}" {body} }}\n'


def _conv(name, bottom, top, out, k, stride, pad, bias):
    bias_text = "" if bias else "bias_term: false"
    return _layer(name, "Convolution", bottom, top, f"convolution_param {{ num_output: {out} kernel_size: {k} pad: {pad} stride: {stride} {bias_text} }}")


def _bn_scale(suffix, blob, eps=None):
    eps_text = f"eps: {eps}" if eps is not None else ""
    return _layer(f"bn{suffix}", "BatchNorm", blob, blob, f"batch_norm_param {{ use_global_stats: true {eps_text} }}") + _layer(
        f"scale{suffix}", "Scale", blob, blob, "scale_param { bias_term: true }"
    )


def resnet_prototxt(
    layers=(1, 1, 1, 1),
    widths=(4, 8, 16, 32),
    block="bottleneck",
    stem_width=8,
    input_size=64,
    classes=10,
    conv1_bias=True,
    stride_in="1x1",
    pool1="ceil",  # "ceil": Caffe's 3x3/2 pad 0; "floor_pad1": round_mode FLOOR, pad 1
    stem="7x7",  # "7x7": conv1 7x7/2; "deep": conv1_1 3x3/2, conv1_2 3x3, conv1_3 3x3 (ResNet-C/D ports)
    stem_widths=None,  # the deep stem's first two widths; default stem_width // 2 each
    pool5=2,
    eps=None,
    eps_at=None,  # {bn layer name: eps}
    name="tiny",
) -> str:
    eps_at = eps_at or {}
    text = f'name: "{name}"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: {input_size}\ninput_dim: {input_size}\n'
    if stem == "7x7":
        text += _conv("conv1", "data", "conv1", stem_width, 7, 2, 3, conv1_bias)
        text += _bn_scale("_conv1", "conv1", eps_at.get("bn_conv1", eps))
        text += _layer("conv1_relu", "ReLU", "conv1", "conv1")
    else:  # the deep stem; its last blob is still called conv1
        first, second = stem_widths or (stem_width // 2, stem_width // 2)
        below = "data"
        for i, (width, stride) in enumerate([(first, 2), (second, 1), (stem_width, 1)], start=1):
            top = "conv1" if i == 3 else f"conv1_{i}"
            text += _conv(f"conv1_{i}", below, top, width, 3, stride, 1, conv1_bias and i == 1)
            text += _bn_scale(f"_conv1_{i}", top, eps_at.get(f"bn_conv1_{i}", eps))
            text += _layer(f"conv1_{i}_relu", "ReLU", top, top)
            below = top
    if pool1 == "ceil":
        text += _layer("pool1", "Pooling", "conv1", "pool1", "pooling_param { kernel_size: 3 stride: 2 pool: MAX }")
    else:
        text += _layer("pool1", "Pooling", "conv1", "pool1", "pooling_param { kernel_size: 3 stride: 2 pad: 1 pool: MAX round_mode: FLOOR }")
    blob, cin = "pool1", stem_width
    expansion = 4 if block == "bottleneck" else 1
    for s, (count, planes) in enumerate(zip(layers, widths)):
        for b in range(count):
            tag = f"{s + 2}{string.ascii_lowercase[b]}"
            stride = 2 if (s > 0 and b == 0) else 1
            out = planes * expansion
            shortcut = blob
            if stride != 1 or cin != out:
                text += _conv(f"res{tag}_branch1", blob, f"res{tag}_branch1", out, 1, stride, 0, False)
                text += _bn_scale(f"{tag}_branch1", f"res{tag}_branch1", eps_at.get(f"bn{tag}_branch1", eps))
                shortcut = f"res{tag}_branch1"
            if block == "bottleneck":
                strides = (stride, 1, 1) if stride_in == "1x1" else (1, stride, 1)
                convs = [("2a", planes, 1, strides[0]), ("2b", planes, 3, strides[1]), ("2c", out, 1, strides[2])]
            else:
                convs = [("2a", planes, 3, stride), ("2b", planes, 3, 1)]
            x = blob
            for i, (part, width, k, st) in enumerate(convs):
                top = f"res{tag}_branch{part}"
                text += _conv(top, x, top, width, k, st, k // 2, False)
                text += _bn_scale(f"{tag}_branch{part}", top, eps_at.get(f"bn{tag}_branch{part}", eps))
                if i < len(convs) - 1:
                    text += _layer(f"res{tag}_branch{part}_relu", "ReLU", top, top)
                x = top
            text += f'layer {{ name: "res{tag}" type: "Eltwise" bottom: "{shortcut}" bottom: "{x}" top: "res{tag}" }}\n'
            text += _layer(f"res{tag}_relu", "ReLU", f"res{tag}", f"res{tag}")
            blob, cin = f"res{tag}", out
    text += _layer("pool5", "Pooling", blob, "pool5", f"pooling_param {{ kernel_size: {pool5} stride: 1 pool: AVE }}")
    text += _layer("fc", "InnerProduct", "pool5", "fc", f"inner_product_param {{ num_output: {classes} }}")
    text += _layer("prob", "Softmax", "fc", "prob")
    return text


def weights_for(net, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Seeded weights of the right shape for every weighted layer of ``net`` (a NetParameter).

    BatchNorm blobs are stored as Caffe stores them: [mean * s, var * s, s] with s = 999.982.
    """
    rng = np.random.default_rng(seed)
    channels: dict[str, int] = {}
    blobs: dict[str, list[np.ndarray]] = {}
    for layer in net.layer:
        if layer.type == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                channels[top] = int(shape.dim[1])
            continue
        cin = channels.get(layer.bottom[0]) if layer.bottom else None
        if layer.type == "Convolution":
            p = layer.convolution_param
            k = int(p.kernel_size[0])
            out = int(p.num_output)
            fan_in = cin * k * k
            arrays = [(rng.standard_normal((out, cin, k, k)) * np.sqrt(2.0 / fan_in) * 0.6).astype(np.float32)]
            if p.bias_term:
                arrays.append((0.1 * rng.standard_normal(out)).astype(np.float32))
            blobs[layer.name] = arrays
            cin = out
        elif layer.type == "BatchNorm":
            mean = 0.2 * rng.standard_normal(cin)
            var = 0.5 + 1.5 * np.abs(rng.standard_normal(cin))
            blobs[layer.name] = [(mean * BN_FACTOR).astype(np.float32), (var * BN_FACTOR).astype(np.float32), np.array([BN_FACTOR], np.float32)]
        elif layer.type == "Scale":
            blobs[layer.name] = [(1.0 + 0.3 * rng.standard_normal(cin)).astype(np.float32), (0.1 * rng.standard_normal(cin)).astype(np.float32)]
        elif layer.type == "InnerProduct":
            out = int(layer.inner_product_param.num_output)
            blobs[layer.name] = [
                (rng.standard_normal((out, cin)) * np.sqrt(1.0 / cin)).astype(np.float32),
                (0.1 * rng.standard_normal(out)).astype(np.float32),
            ]
            cin = out
        for top in layer.top:
            channels[top] = cin
    return blobs
