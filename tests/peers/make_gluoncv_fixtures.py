"""Write the GluonCV fixtures with GluonCV's own model code and the real MXNet (run by .venv-peer's python).

For each net (ResNetV1b family: v1b basic and bottleneck, v1c, v1d, v1e, v1s; CIFAR ResNet V1 and
V2 at two depths; Gluon's model-zoo thumbnail V1 and V2 nets, whose names the CIFAR ones share; a
GroupNorm and an SE variant for the refusal tests) it builds the net from
``gluoncv/model_zoo/resnetv1b.py`` / ``cifarresnet.py`` / ``se_resnet.py`` loaded as standalone
modules (GluonCV's package ``__init__`` needs more than MXNet), sets every parameter and BatchNorm
statistic to seeded non-trivial values, and writes:

- ``NAME.params``                    net.save_parameters (structural names: conv1.0.weight, ...)
- ``NAME-legacy.params``             net.save_params (CIFAR and thumbnail nets: stage1_conv0_weight, ...)
- ``NAME.onnx``                      mx.onnx.export_model of the export (every net but the GN and SE ones)
- ``NAME-symbol.json``, ``NAME-0000.params``   net.export (arg:/aux: names with the graph)
- ``input_S.npy``, ``logits_S.npy``  inputs (seeded normal, batch 2) and MXNet's logits, per size S

The sizes include an odd one where GluonCV's ceil-mode, count_include_pad=False average pool of the
"avg down" shortcut sees a partial last window.  Small depths and few classes keep generation short.

Usage: .venv-peer/bin/python tests/peers/make_gluoncv_fixtures.py --out tests/fixtures/cache/gluoncv
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.model_zoo import vision

CLASSES = 10


def gluoncv_file(name: str) -> Path:
    spec = importlib.util.find_spec("gluoncv")
    return Path(spec.submodule_search_locations[0]) / "model_zoo" / name


def standalone(name: str):
    path = gluoncv_file(name)
    spec = importlib.util.spec_from_file_location(f"gluoncv_standalone_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GroupNorm(gluon.nn.GroupNorm):
    """MXNet's GroupNorm with GluonCV's norm_layer signature (in_channels=...), as gluoncv.nn's has."""

    def __init__(self, in_channels=0, **kwargs):
        super().__init__(num_groups=2, **kwargs)


def nets():
    v1b = standalone("resnetv1b.py")
    cifar = standalone("cifarresnet.py")
    se = standalone("se_resnet.py")
    R, Basic, Bottle = v1b.ResNetV1b, v1b.BasicBlockV1b, v1b.BottleneckV1b
    small = [1, 2, 1, 1]  # a short bottleneck net: every stage, a repeated block, all shortcut kinds
    sizes = (64, 97)
    return {
        # name: (builder, input sizes, what it is)
        "resnet18_v1b": (lambda: R(Basic, [2, 2, 2, 2], classes=CLASSES, name_prefix="resnetv1b_"), sizes),
        "resnet50_v1b": (lambda: R(Bottle, [3, 4, 6, 3], classes=CLASSES, name_prefix="resnetv1b_"), sizes),
        "resnet50_v1c": (lambda: R(Bottle, [3, 4, 6, 3], classes=CLASSES, deep_stem=True, name_prefix="resnetv1c_"), sizes),
        "resnet50_v1d": (
            lambda: R(Bottle, [3, 4, 6, 3], classes=CLASSES, deep_stem=True, avg_down=True, name_prefix="resnetv1d_"), sizes),
        "resnet50_v1e": (
            lambda: R(Bottle, [3, 4, 6, 3], classes=CLASSES, deep_stem=True, avg_down=True, stem_width=64,
                      name_prefix="resnetv1e_"), sizes),
        "resnet50_v1s": (
            lambda: R(Bottle, [3, 4, 6, 3], classes=CLASSES, deep_stem=True, stem_width=64, name_prefix="resnetv1s_"), sizes),
        "small_v1d": (lambda: R(Bottle, small, classes=CLASSES, deep_stem=True, avg_down=True, name_prefix="resnetv1d_"), (33, 97)),
        "cifar_resnet20_v1": (lambda: cifar.CIFARResNetV1(cifar.CIFARBasicBlockV1, [3, 3, 3], [16, 16, 32, 64]), (32, 33)),
        "cifar_resnet20_v2": (lambda: cifar.CIFARResNetV2(cifar.CIFARBasicBlockV2, [3, 3, 3], [16, 16, 32, 64]), (32, 33)),
        "cifar_resnet56_v2": (lambda: cifar.CIFARResNetV2(cifar.CIFARBasicBlockV2, [9, 9, 9], [16, 16, 32, 64]), (32,)),
        # Gluon's own thumbnail nets (mxnet.gluon.model_zoo.vision): the bare 3x3/1 stem conv; V2 projects the
        # pre-activated input, where GluonCV's CIFAR V2 projects the raw one (the same save_parameters names).
        "thumb_resnet18_v1": (lambda: vision.get_resnet(1, 18, thumbnail=True, classes=CLASSES), (32, 33)),
        "thumb_resnet18_v2": (lambda: vision.get_resnet(2, 18, thumbnail=True, classes=CLASSES), (32,)),
        "thumb_small_v2": (
            lambda: vision.ResNetV2(vision.BottleneckV2, [1, 2, 1, 1], [64, 256, 512, 1024, 2048], thumbnail=True,
                                    classes=CLASSES), (32, 33)),
        "resnet50_v1b_gn": (
            lambda: R(Bottle, small, classes=CLASSES, norm_layer=GroupNorm, name_prefix="resnetv1b_"), (64,)),
        "se_resnet18_v1": (lambda: se.SE_ResNetV1(se.SE_BasicBlockV1, [2, 2, 2, 2], [64, 64, 128, 256, 512], classes=CLASSES), (64,)),
    }


def fill(net, seed: int) -> None:
    """Every parameter and BN statistic seeded and non-trivial (gammas, betas, means, vars all used)."""
    rng = np.random.default_rng(seed)
    for name, param in sorted(net.collect_params().items()):
        shape = param.shape
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("running_mean"):
            value = rng.normal(0.0, 0.2, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.6, 1.4, shape) * rng.choice([-1.0, 1.0], shape, p=[0.1, 0.9])
        elif name.endswith("beta") or name.endswith("bias"):
            value = rng.normal(0.0, 0.2, shape)
        else:  # conv / dense weights, He-scaled so activations keep their size through the depth
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        param.set_data(mx.nd.array(value.astype(np.float32)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    mx.random.seed(0)
    manifest = {"script_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16], "models": {}}
    for seed, (name, (builder, sizes)) in enumerate(nets().items()):
        folder = out / name
        folder.mkdir(exist_ok=True)
        net = builder()
        net.initialize(mx.init.Xavier())
        first = mx.nd.array(np.zeros((1, 3, sizes[0], sizes[0]), np.float32))
        net(first)  # deferred shapes
        fill(net, 1000 + seed)
        files = []
        rng = np.random.default_rng(seed)
        for size in sizes:
            x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
            logits = net(mx.nd.array(x)).asnumpy()
            np.save(folder / f"input_{size}.npy", x)
            np.save(folder / f"logits_{size}.npy", logits)
            files += [f"input_{size}.npy", f"logits_{size}.npy"]
        net.save_parameters(str(folder / f"{name}.params"))
        if name.startswith(("cifar_", "thumb_")):  # the pre-1.3 format too: prefix-stripped scoped names
            net.save_params(str(folder / f"{name}-legacy.params"))
            files.append(f"{name}-legacy.params")
        net.hybridize()
        net(mx.nd.array(np.zeros((1, 3, sizes[0], sizes[0]), np.float32)))
        net.export(str(folder / name))
        files += [f"{name}.params", f"{name}-symbol.json", f"{name}-0000.params"]
        if not name.endswith("_gn") and not name.startswith("se_"):  # MXNet's own ONNX export, for convert-onnx
            mx.onnx.export_model(
                str(folder / f"{name}-symbol.json"), str(folder / f"{name}-0000.params"),
                in_shapes=[(2, 3, sizes[0], sizes[0])], in_types=[np.float32], onnx_file_path=str(folder / f"{name}.onnx"),
            )
            files.append(f"{name}.onnx")
        manifest["models"][name] = {"files": files, "sizes": list(sizes), "classes": CLASSES}
        print(f"== {name}: {', '.join(files)}", flush=True)
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(tmp, out / "manifest.json")


if __name__ == "__main__":
    main()
