"""Write the MXNet / onnxruntime fixtures that referee convert-mxnet and convert-onnx.

Run with the peer environment's python (MXNet 1.9.1 needs numpy 1.23.5; see setup_peer_env.sh):

    .venv-peer/bin/python tests/peers/make_fixtures.py [--out DIR] [--force] [--only NAME ...]

Everything here is made by the real frameworks, so the toolkit's tests compare against MXNet and
onnxruntime themselves, never against the toolkit's own output.  For each model a folder under the
cache root (``tests/fixtures/cache/mxnet/`` by default, gitignored):

- ``gluon_resnet{18,34,50,101,152}_v{1,2}/``: the real Gluon model zoo net (pretrained=False, seeded
  init), with every BatchNorm's running statistics, gamma and beta, and every conv / dense bias set
  to non-trivial seeded values so that each of them changes the logits.  ``model.params``
  (``save_parameters``: structural names), ``export-symbol.json`` + ``export-0000.params``
  (``export()``: ``arg:``/``aux:`` names), ``model.onnx`` (``mx.onnx.export_model`` of that export),
  ``input.npy`` (float32 (N, 3, 224, 224), RGB in [0, 1] normalised with the ImageNet mean/std, as
  Gluon's transforms do), ``logits_mxnet.npy`` and ``logits_onnxruntime.npy``.
  V2's input BatchNorm is ``BatchNorm(scale=False, center=False)``: MXNet runs it with
  ``fix_gamma=True`` and never trains its gamma (1) or beta (0); the main files keep those values, as
  every real Gluon V2 file has them (MXNet's ONNX exporter ignores fix_gamma, so a stored gamma other
  than 1 would make the ONNX export disagree with MXNet).  ``gluon_resnet18_v2`` also holds two
  variants made to test that input BN: ``variant_datagamma.params`` (stored gamma far from 1, which
  MXNet ignores: its ``logits_mxnet_variant_datagamma.npy`` equal the main logits) and
  ``variant_databeta.params`` (a non-zero beta, which MXNet does use).
- ``symbolic_resnet{D}/``: the classic MXNet model-zoo ``resnet-D`` built with the symbol API (data BN
  with fix_gamma=True and eps 2e-5, pre-activation units, a projection on each stage's first unit,
  the stride on the 3x3 of bottlenecks, final bn1/relu1, global pool, fc1, SoftmaxOutput), saved with
  ``mx.model.save_checkpoint`` as ``resnet-D-symbol.json`` + ``resnet-D-0000.params``; ``input.npy``
  is 0-255 RGB (the data BN normalises inside the graph); ``logits_mxnet.npy`` are fc1's output.  The
  stored gamma of ``bn_data`` (fix_gamma) is far from 1, so a converter that honours it fails.

A ``manifest.json`` at the cache root records the versions, the files and the timings; it is written
last, so its presence means the cache is complete.  Each model folder is written to a temporary
folder and renamed into place, so an interrupted run leaves no half-written model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import time
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")  # deterministic, no worker threads

import numpy as np  # noqa: E402

try:
    import mxnet as mx  # noqa: E402
    import onnx  # noqa: E402
    import onnxruntime as ort  # noqa: E402
    from mxnet.gluon.model_zoo import vision  # noqa: E402
except ImportError as exc:  # pragma: no cover - only outside the peer env
    sys.exit(f"make_fixtures.py needs the peer environment (run tests/peers/setup_peer_env.sh): {exc}")

FORMAT_VERSION = 1  # bump when the fixtures' content changes: the pytest helper then regenerates
BATCH = 2
SIZE = 224
GLUON_DEPTHS = (18, 34, 50, 101, 152)
SYMBOLIC_DEPTHS = (18, 34, 50, 101, 152)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "fixtures" / "cache" / "mxnet"


def model_names() -> list[str]:
    gluon = [f"gluon_resnet{d}_v{v}" for v in (1, 2) for d in GLUON_DEPTHS]
    return gluon + [f"symbolic_resnet{d}" for d in SYMBOLIC_DEPTHS]


def rng_for(name: str) -> np.random.Generator:
    """A generator seeded by the model's name, so a model's files do not depend on generation order."""
    return np.random.default_rng(zlib.crc32(name.encode()))


# -- non-trivial values for every parameter ------------------------------------------------------
def bn_values(rng: np.random.Generator, channels: int) -> dict[str, np.ndarray]:
    """BatchNorm values that make every part of BN matter.

    Variances are log-uniform down to 1e-4 so that eps (1e-5 vs 2e-5) changes the logits; gamma is
    scaled by sqrt(var) so that the channel's gain stays O(1) and deep nets do not blow up.
    """
    var = 10.0 ** rng.uniform(-4.0, 0.3, channels)
    gain = rng.uniform(0.3, 1.0, channels) * np.where(rng.random(channels) < 0.1, -1.0, 1.0)
    return {
        "gamma": (gain * np.sqrt(var)).astype(np.float32),
        "beta": rng.normal(0.0, 0.2, channels).astype(np.float32),
        "mean": (rng.normal(0.0, 0.2, channels) * np.sqrt(var)).astype(np.float32),
        "var": var.astype(np.float32),
    }


def he_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


# -- Gluon -----------------------------------------------------------------------------------------
def randomise_gluon(net, rng: np.random.Generator, data_bn_prefix: str | None) -> None:
    """Set every parameter of a Gluon ResNet; V2's input BN keeps gamma 1 and beta 0 (see module doc)."""
    params = net.collect_params()
    bn_prefixes = sorted({name[: -len("_running_var")] for name in params if name.endswith("_running_var")})
    for prefix in bn_prefixes:
        channels = params[prefix + "_running_var"].shape[0]
        values = bn_values(rng, channels)
        if prefix == data_bn_prefix:
            # The raw input has O(1) spread after the ImageNet normalisation; stats of that order.
            values = {
                "gamma": np.ones(channels, np.float32),
                "beta": np.zeros(channels, np.float32),
                "mean": rng.normal(0.0, 0.3, channels).astype(np.float32),
                "var": rng.uniform(0.5, 2.0, channels).astype(np.float32),
            }
        params[prefix + "_gamma"].set_data(mx.nd.array(values["gamma"]))
        params[prefix + "_beta"].set_data(mx.nd.array(values["beta"]))
        params[prefix + "_running_mean"].set_data(mx.nd.array(values["mean"]))
        params[prefix + "_running_var"].set_data(mx.nd.array(values["var"]))
    for name, param in params.items():
        if name.endswith("_weight"):
            param.set_data(mx.nd.array(he_normal(rng, param.shape)))
        elif name.endswith("_bias"):
            param.set_data(mx.nd.array(rng.normal(0.0, 0.2, param.shape).astype(np.float32)))


def gluon_input(rng: np.random.Generator) -> np.ndarray:
    """RGB in [0, 1], normalised as Gluon's ``transforms.Normalize(mean, std)`` does."""
    pixels = rng.random((BATCH, 3, SIZE, SIZE), dtype=np.float32)
    return ((pixels - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]).astype(np.float32)


def run_onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # the exporter keeps initializers as graph inputs: one warning each
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0]


def make_gluon(name: str, version: int, depth: int, folder: Path) -> dict:
    rng = rng_for(name)
    mx.random.seed(zlib.crc32(name.encode()) % (2**31))
    net = vision.get_resnet(version, depth, pretrained=False)
    net.initialize(mx.init.Xavier())
    x = gluon_input(rng)
    net(mx.nd.array(x[:1]))  # materialise deferred shapes
    data_bn = net.features[0].prefix.rstrip("_") if version == 2 else None
    randomise_gluon(net, rng, data_bn)
    net.hybridize(static_alloc=False)
    logits = net(mx.nd.array(x)).asnumpy()
    np.save(folder / "input.npy", x)
    np.save(folder / "logits_mxnet.npy", logits)
    net.save_parameters(str(folder / "model.params"))
    net.export(str(folder / "export"), epoch=0)
    mx.onnx.export_model(
        str(folder / "export-symbol.json"),
        str(folder / "export-0000.params"),
        in_shapes=[(BATCH, 3, SIZE, SIZE)],
        in_types=[np.float32],
        onnx_file_path=str(folder / "model.onnx"),
        dynamic=True,
        dynamic_input_shapes=[(None, 3, SIZE, SIZE)],
    )
    onnx.checker.check_model(str(folder / "model.onnx"))
    ort_logits = run_onnxruntime(folder / "model.onnx", x)
    np.save(folder / "logits_onnxruntime.npy", ort_logits)
    info = {
        "kind": "gluon",
        "version": version,
        "depth": depth,
        "arch": f"resnet{depth}_v{version}",
        "max_abs_mxnet_vs_onnxruntime": float(np.abs(logits - ort_logits).max()),
        "max_abs_logit": float(np.abs(logits).max()),
    }
    if version == 2 and depth == 18:
        info["variants"] = make_gluon_v2_variants(net, data_bn, x, folder, logits)
    return info


def make_gluon_v2_variants(net, data_bn: str, x: np.ndarray, folder: Path, logits: np.ndarray) -> dict:
    """The input-BN variants of V2: a stored gamma MXNet ignores, a beta MXNet uses."""
    params = net.collect_params()
    gamma, beta = params[data_bn + "_gamma"], params[data_bn + "_beta"]
    out = {}
    gamma.set_data(mx.nd.array(np.array([0.01, 5.0, -3.0], np.float32)))
    variant = net(mx.nd.array(x)).asnumpy()
    net.save_parameters(str(folder / "variant_datagamma.params"))
    np.save(folder / "logits_mxnet_variant_datagamma.npy", variant)
    out["datagamma"] = {"gamma": [0.01, 5.0, -3.0], "max_abs_vs_main": float(np.abs(variant - logits).max())}
    gamma.set_data(mx.nd.ones(3))
    beta.set_data(mx.nd.array(np.array([0.5, -0.7, 0.3], np.float32)))
    variant = net(mx.nd.array(x)).asnumpy()
    net.save_parameters(str(folder / "variant_databeta.params"))
    np.save(folder / "logits_mxnet_variant_databeta.npy", variant)
    out["databeta"] = {"beta": [0.5, -0.7, 0.3], "max_abs_vs_main": float(np.abs(variant - logits).max())}
    beta.set_data(mx.nd.zeros(3))
    return out


# -- the classic symbolic ResNet --------------------------------------------------------------------
EPS = 2e-5


def residual_unit(data, num_filter: int, stride: int, dim_match: bool, name: str, bottleneck: bool):
    """A pre-activation unit, as the old model zoo's ``symbols/resnet.py`` lays it out."""
    sym = mx.sym
    bn1 = sym.BatchNorm(data, fix_gamma=False, eps=EPS, momentum=0.9, name=name + "_bn1")
    act1 = sym.Activation(bn1, act_type="relu", name=name + "_relu1")
    if bottleneck:
        mid = num_filter // 4
        conv1 = sym.Convolution(act1, num_filter=mid, kernel=(1, 1), stride=(1, 1), pad=(0, 0), no_bias=True, name=name + "_conv1")
        bn2 = sym.BatchNorm(conv1, fix_gamma=False, eps=EPS, momentum=0.9, name=name + "_bn2")
        act2 = sym.Activation(bn2, act_type="relu", name=name + "_relu2")
        conv2 = sym.Convolution(act2, num_filter=mid, kernel=(3, 3), stride=(stride, stride), pad=(1, 1), no_bias=True, name=name + "_conv2")
        bn3 = sym.BatchNorm(conv2, fix_gamma=False, eps=EPS, momentum=0.9, name=name + "_bn3")
        act3 = sym.Activation(bn3, act_type="relu", name=name + "_relu3")
        body = sym.Convolution(act3, num_filter=num_filter, kernel=(1, 1), stride=(1, 1), pad=(0, 0), no_bias=True, name=name + "_conv3")
    else:
        conv1 = sym.Convolution(act1, num_filter=num_filter, kernel=(3, 3), stride=(stride, stride), pad=(1, 1), no_bias=True, name=name + "_conv1")
        bn2 = sym.BatchNorm(conv1, fix_gamma=False, eps=EPS, momentum=0.9, name=name + "_bn2")
        act2 = sym.Activation(bn2, act_type="relu", name=name + "_relu2")
        body = sym.Convolution(act2, num_filter=num_filter, kernel=(3, 3), stride=(1, 1), pad=(1, 1), no_bias=True, name=name + "_conv2")
    if dim_match:
        shortcut = data
    else:
        shortcut = sym.Convolution(act1, num_filter=num_filter, kernel=(1, 1), stride=(stride, stride), no_bias=True, name=name + "_sc")
    return body + shortcut


def symbolic_resnet(depth: int, num_classes: int = 1000):
    sym = mx.sym
    bottleneck = depth >= 50
    units = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}[depth]
    filters = (64, 256, 512, 1024, 2048) if bottleneck else (64, 64, 128, 256, 512)
    data = sym.Variable("data")
    body = sym.BatchNorm(data, fix_gamma=True, eps=EPS, momentum=0.9, name="bn_data")
    body = sym.Convolution(body, num_filter=filters[0], kernel=(7, 7), stride=(2, 2), pad=(3, 3), no_bias=True, name="conv0")
    body = sym.BatchNorm(body, fix_gamma=False, eps=EPS, momentum=0.9, name="bn0")
    body = sym.Activation(body, act_type="relu", name="relu0")
    body = sym.Pooling(body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pooling0")
    for stage, count in enumerate(units):
        stride = 1 if stage == 0 else 2
        body = residual_unit(body, filters[stage + 1], stride, False, f"stage{stage + 1}_unit1", bottleneck)
        for unit in range(2, count + 1):
            body = residual_unit(body, filters[stage + 1], 1, True, f"stage{stage + 1}_unit{unit}", bottleneck)
    body = sym.BatchNorm(body, fix_gamma=False, eps=EPS, momentum=0.9, name="bn1")
    body = sym.Activation(body, act_type="relu", name="relu1")
    body = sym.Pooling(body, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")
    body = sym.Flatten(body, name="flatten0")
    body = sym.FullyConnected(body, num_hidden=num_classes, name="fc1")
    return sym.SoftmaxOutput(body, name="softmax")


def symbolic_params(net, rng: np.random.Generator) -> tuple[dict, dict]:
    arg_shapes, _, aux_shapes = net.infer_shape(data=(BATCH, 3, SIZE, SIZE))
    shapes = dict(zip(net.list_arguments(), arg_shapes))
    shapes.update(zip(net.list_auxiliary_states(), aux_shapes))
    args, aux = {}, {}
    for bn in sorted(name[: -len("_moving_var")] for name in net.list_auxiliary_states() if name.endswith("_moving_var")):
        channels = shapes[bn + "_moving_var"][0]
        values = bn_values(rng, channels)
        if bn == "bn_data":
            # 0-255 RGB goes in: statistics of that scale; the stored gamma is far from 1 and must be
            # ignored (fix_gamma=True), beta is learnt and used.
            values = {
                "gamma": rng.uniform(-3.0, 5.0, channels).astype(np.float32),
                "beta": rng.normal(0.0, 0.5, channels).astype(np.float32),
                "mean": rng.uniform(100.0, 140.0, channels).astype(np.float32),
                "var": rng.uniform(2500.0, 4500.0, channels).astype(np.float32),
            }
        args[bn + "_gamma"] = values["gamma"]
        args[bn + "_beta"] = values["beta"]
        aux[bn + "_moving_mean"] = values["mean"]
        aux[bn + "_moving_var"] = values["var"]
    for name in net.list_arguments():
        if name.endswith("_weight"):
            args[name] = he_normal(rng, shapes[name])
        elif name.endswith("_bias"):
            args[name] = rng.normal(0.0, 0.2, shapes[name]).astype(np.float32)
    return {k: mx.nd.array(v) for k, v in args.items()}, {k: mx.nd.array(v) for k, v in aux.items()}


def make_symbolic(name: str, depth: int, folder: Path) -> dict:
    rng = rng_for(name)
    net = symbolic_resnet(depth)
    args, aux = symbolic_params(net, rng)
    x = np.floor(rng.random((BATCH, 3, SIZE, SIZE)) * 256.0).clip(0, 255).astype(np.float32)
    logits_sym = net.get_internals()["fc1_output"]
    bound_args = dict(args, data=mx.nd.array(x))
    executor = logits_sym.bind(mx.cpu(), bound_args, aux_states=aux, grad_req="null")
    logits = executor.forward(is_train=False)[0].asnumpy()
    np.save(folder / "input.npy", x)
    np.save(folder / "logits_mxnet.npy", logits)
    mx.model.save_checkpoint(str(folder / f"resnet-{depth}"), 0, net, args, aux)
    return {"kind": "symbolic", "depth": depth, "arch": f"mxnet_resnet{depth}", "max_abs_logit": float(np.abs(logits).max())}


# -- driver ----------------------------------------------------------------------------------------
def script_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def make_one(name: str, root: Path) -> dict:
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    if name.startswith("gluon_"):
        depth, version = name[len("gluon_resnet"):].split("_v")
        info = make_gluon(name, int(version), int(depth), tmp)
    else:
        info = make_symbolic(name, int(name[len("symbolic_resnet"):]), tmp)
    info["seconds"] = round(time.perf_counter() - start, 2)
    info["files"] = sorted(p.name for p in tmp.iterdir())
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"cache root (default {DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="regenerate models whose folder already exists")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"just these models, of: {' '.join(model_names())}")
    args = parser.parse_args(argv)
    names = args.only or model_names()
    unknown = sorted(set(names) - set(model_names()))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {' '.join(model_names())}")
    root: Path = args.out
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    stale = old.get("format_version") != FORMAT_VERSION
    models = {} if stale else dict(old.get("models", {}))
    manifest_path.unlink(missing_ok=True)  # absent until the cache is complete again
    start = time.perf_counter()
    for name in names:
        if not args.force and not stale and name in models and (root / name).is_dir():
            print(f"{name}: cached", flush=True)
            continue
        models[name] = make_one(name, root)
        print(f"{name}: {models[name]['seconds']} s", flush=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "script_sha256": script_digest(),
        "batch": BATCH,
        "size": SIZE,
        "versions": {
            "python": platform.python_version(),
            "mxnet": mx.__version__,
            "numpy": np.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "seconds_this_run": round(time.perf_counter() - start, 2),
        "models": models,
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
