"""Each classic porting bug, injected by hand into a pair of reference networks, must be found
and named, and nothing else named; clean pairs must name nothing.

Every injection is the wrong handling written out here, and `test_injected_bug_moves_outputs`
shows with the test's own forward pass that it moves the logits beyond the tolerance: a cause
the audit could name on unchanged numbers would prove nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pytest
import torch

from resnet_port.audit import CAUSE_KEYS, DEFAULT_RTOL
from tests.audit.pairs import (
    CROP,
    caffe_prep,
    logits,
    network_input,
    random_state_dict,
    rel_gap,
    sample_images,
    save,
    small_spec,
    torch_prep,
)
from resnet_port.checkpoints import Preprocessing
from resnet_port.resnet_ref import ResNetSpec


@dataclass
class Pair:
    spec_a: ResNetSpec
    sd_a: dict[str, torch.Tensor]
    prep_a: Preprocessing
    spec_b: ResNetSpec
    sd_b: dict[str, torch.Tensor]
    prep_b: Preprocessing

    def gap(self) -> float:
        images = sample_images()
        la = logits(self.spec_a, self.sd_a, network_input(images, self.prep_a))
        lb = logits(self.spec_b, self.sd_b, network_input(images, self.prep_b))
        return rel_gap(la, lb)

    def write(self, folder) -> tuple:
        return (
            save(folder / "a.pth", self.spec_a, self.sd_a, self.prep_a),
            save(folder / "b.safetensors", self.spec_b, self.sd_b, self.prep_b),
        )


INJECTIONS: dict[str, tuple[str, Callable[[], Pair]]] = {}


def injection(name: str, cause: str):
    def register(make: Callable[[], Pair]) -> Callable[[], Pair]:
        if name in INJECTIONS:
            raise RuntimeError(f"injection {name} twice")
        INJECTIONS[name] = (cause, make)
        return make

    return register


def _base(arch: str, seed: int = 1, **changes) -> tuple[ResNetSpec, dict[str, torch.Tensor]]:
    spec = small_spec(arch, **changes)
    return spec, random_state_dict(spec, seed)


# -- the wrong handlings ------------------------------------------------------------------------
@injection("conv1_not_flipped_same_order", "channel_order")
def _conv1_flipped() -> Pair:
    spec, sd = _base("resnet50")
    bad = dict(sd, **{"conv1.weight": sd["conv1.weight"].flip(1)})
    return Pair(spec, sd, torch_prep(), spec, bad, torch_prep())


@injection("caffe_port_declared_rgb_without_flip", "channel_order")
def _declared_rgb() -> Pair:
    spec, sd = _base("caffe_resnet50")
    # The port says RGB (mean reordered correctly) but kept Caffe's BGR conv1 as is.
    return Pair(spec, sd, caffe_prep(), spec, dict(sd), caffe_prep(channel_order="RGB", mean=(123.0, 117.0, 104.0)))


@injection("caffe_bn_factor_not_divided", "bn_scale_factor")
def _bn_factor() -> Pair:
    spec, sd = _base("caffe_resnet50")
    bad = dict(sd)
    for key in sd:
        if key.endswith(("running_mean", "running_var")):
            bad[key] = sd[key] * 999.982
    return Pair(spec, sd, caffe_prep(), spec, bad, caffe_prep())


@injection("eps_1e-3_for_1e-5", "bn_eps")
def _eps() -> Pair:
    spec, sd = _base("resnet50")
    return Pair(spec, sd, torch_prep(), spec.replace(bn_eps=1e-3), dict(sd), torch_prep())


@injection("mxnet_fix_gamma_ignored", "fix_gamma")
def _fix_gamma() -> Pair:
    spec, sd = _base("resnet18_v1")
    good = dict(sd)
    for module in ("bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1"):  # fix_gamma=True in the source
        good[f"{module}.weight"] = torch.ones_like(sd[f"{module}.weight"])
    return Pair(spec, good, torch_prep(), spec, dict(sd), torch_prep())  # B copied the stored gammas


@injection("stride_in_3x3_for_caffe", "stride_placement")
def _stride() -> Pair:
    spec, sd = _base("caffe_resnet50")
    return Pair(spec, sd, caffe_prep(), spec.replace(stride_in="3x3"), dict(sd), caffe_prep())


@injection("floor_pool_for_caffe_ceil", "pool_rounding")
def _pool() -> Pair:
    spec, sd = _base("caffe_resnet50")
    return Pair(spec, sd, caffe_prep(), spec.replace(stem_pool="max"), dict(sd), caffe_prep())


@injection("0-255_fed_to_0-1_net", "input_scale")
def _scale() -> Pair:
    spec, sd = _base("resnet50")
    return Pair(spec, sd, torch_prep(), spec, dict(sd), torch_prep(pixel_max=255.0))


def _mean_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    ramp = np.linspace(-1.0, 1.0, CROP)
    field = 25.0 * ramp[None, :, None] * ramp[None, None, :] + 8.0 * rng.standard_normal((3, CROP, CROP))
    return (np.array([104.0, 117.0, 123.0])[:, None, None] + field).astype(np.float32)


@injection("mean_image_replaced_by_means", "mean_image")
def _mean() -> Pair:
    spec, sd = _base("caffe_resnet50")
    image = _mean_image()
    means = tuple(float(v) for v in image.astype(np.float64).mean(axis=(1, 2)))
    return Pair(spec, sd, caffe_prep(mean=None, mean_image=image), spec, dict(sd), caffe_prep(mean=means))


@injection("mean_values_forgotten", "missing_mean")
def _no_mean() -> Pair:
    spec, sd = _base("caffe_resnet50")  # converted without --mean-values: BGR 0-255, nothing subtracted
    return Pair(spec, sd, caffe_prep(mean=(104.0, 117.0, 123.0)), spec, dict(sd), caffe_prep(mean=None))


@injection("mean_image_forgotten", "missing_mean")
def _no_mean_image() -> Pair:
    spec, sd = _base("caffe_resnet50")
    return Pair(spec, sd, caffe_prep(mean=None, mean_image=_mean_image()), spec, dict(sd), caffe_prep(mean=None))


@injection("classifier_rows_permuted", "class_order")
def _classes() -> Pair:
    spec, sd = _base("resnet18")
    perm = torch.randperm(spec.num_classes, generator=torch.Generator().manual_seed(5))
    bad = dict(sd, **{"fc.weight": sd["fc.weight"][perm], "fc.bias": sd["fc.bias"][perm]})
    return Pair(spec, sd, torch_prep(), spec, bad, torch_prep())


@injection("fc_reshaped_not_transposed", "transposed_fc")
def _fc_reshape() -> Pair:
    spec, sd = _base("resnet50")
    w = sd["fc.weight"]  # the source stored it (in, out); the port reshaped instead of transposing
    bad = dict(sd, **{"fc.weight": w.t().contiguous().reshape(w.shape)})
    return Pair(spec, sd, torch_prep(), spec, bad, torch_prep())


@injection("square_fc_transposed", "transposed_fc")
def _fc_square() -> Pair:
    spec, sd = _base("resnet18", num_classes=16)  # 16 features, 16 classes: a transpose keeps the shape
    bad = dict(sd, **{"fc.weight": sd["fc.weight"].t().contiguous()})
    return Pair(spec, sd, torch_prep(), spec, bad, torch_prep())


@injection("caffe_conv1_bias_dropped", "missing_bias")
def _conv1_bias() -> Pair:
    spec, sd = _base("caffe_resnet50")
    assert "stem" in spec.conv_bias  # the test's own precondition, not user input
    # A bias of the size of conv1's 0-255 outputs; it then survives the BatchNorm that follows.
    sd["conv1.bias"] = torch.randn(sd["conv1.bias"].shape, generator=torch.Generator().manual_seed(4)) * 30
    bad = {k: v for k, v in sd.items() if k != "conv1.bias"}
    return Pair(spec, sd, caffe_prep(), spec.replace(conv_bias=()), bad, caffe_prep())


@injection("fc_bias_left_at_zero", "missing_bias")
def _fc_bias() -> Pair:
    spec, sd = _base("resnet18")
    return Pair(spec, sd, torch_prep(), spec, dict(sd, **{"fc.bias": torch.zeros_like(sd["fc.bias"])}), torch_prep())


def test_every_cause_has_an_injection():
    assert {cause for cause, _ in INJECTIONS.values()} == set(CAUSE_KEYS)


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_injected_bug_moves_outputs(name):
    cause, make = INJECTIONS[name]
    gap = make().gap()
    assert gap > 10 * DEFAULT_RTOL, f"{name}: the injected {cause} bug moves logits by only {gap:.2e}"


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_injected_bug_is_named_alone(name, tmp_path, run_audit):
    cause, make = INJECTIONS[name]
    a, b = make().write(tmp_path)
    code, report = run_audit(a, b)
    assert report["verdict"] == "different"
    assert code == 1
    assert [c["key"] for c in report["causes"]] == [cause], report["causes"]
    assert report["causes"][0]["evidence"]
    assert report["causes"][0]["rel_logit_diff_after_fix"] <= DEFAULT_RTOL
    assert report["max_abs_diff"] > 0


# -- clean pairs: the same network, stored or expressed differently -----------------------------
CLEAN: dict[str, tuple[str, Callable[[], Pair]]] = {}


def clean(name: str, verdict: str):
    def register(make):
        CLEAN[name] = (verdict, make)
        return make

    return register


@clean("same_weights_pth_and_safetensors", "identical")
def _same() -> Pair:
    spec, sd = _base("caffe_resnet50")
    return Pair(spec, sd, caffe_prep(), spec, {k: v.clone() for k, v in sd.items()}, caffe_prep())


@clean("float_rounding_noise", "equivalent")
def _noise() -> Pair:
    spec, sd = _base("resnet50")
    gen = torch.Generator().manual_seed(9)
    noisy = {k: (v * (1 + 1e-7 * torch.randn(v.shape, generator=gen))) if v.is_floating_point() else v for k, v in sd.items()}
    return Pair(spec, sd, torch_prep(), spec, noisy, torch_prep())


@clean("caffe_bgr_ported_to_rgb_correctly", "equivalent")
def _bgr_to_rgb() -> Pair:
    spec, sd = _base("caffe_resnet50")
    rgb = dict(sd, **{"conv1.weight": sd["conv1.weight"].flip(1).contiguous()})
    return Pair(spec, sd, caffe_prep(), spec, rgb, caffe_prep(channel_order="RGB", mean=(123.0, 117.0, 104.0)))


@clean("0-1_std_vs_0-255_std_times_255", "equivalent")
def _scales() -> Pair:
    spec, sd = _base("resnet50")
    a = torch_prep()
    b = torch_prep(pixel_max=255.0, mean=tuple(255 * m for m in a.mean), std=tuple(255 * s for s in a.std))
    return Pair(spec, sd, a, spec, dict(sd), b)


@clean("mxnet_fixed_gamma_data_bn_stored_gamma", "equivalent")
def _data_bn_gamma() -> Pair:
    spec, sd = _base("mxnet_resnet50")
    ones = dict(sd, **{"data_bn.weight": torch.ones(3)})
    prep = torch_prep(pixel_max=255.0, mean=None, std=None)
    return Pair(spec, ones, prep, spec, dict(sd), prep)  # gamma is ignored by fix_gamma: no effect


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_clean_pair_names_nothing(name, tmp_path, run_audit):
    verdict, make = CLEAN[name]
    pair = make()
    assert pair.gap() <= DEFAULT_RTOL  # the test's own measure: these really are the same network
    a, b = pair.write(tmp_path)
    code, report = run_audit(a, b)
    assert (code, report["verdict"], report["causes"]) == (0, verdict, [])


def test_two_bugs_are_both_named(tmp_path, run_audit):
    pair = _conv1_flipped()
    pair = replace(pair, spec_b=pair.spec_b.replace(bn_eps=1e-3))
    a, b = pair.write(tmp_path)
    code, report = run_audit(a, b)
    assert code == 1
    assert sorted(c["key"] for c in report["causes"]) == ["bn_eps", "channel_order"]


def test_unexplained_difference_names_nothing(tmp_path, run_audit):
    spec, sd = _base("resnet50")
    other = random_state_dict(spec, seed=2)  # another network altogether
    a = save(tmp_path / "a.pth", spec, sd, torch_prep())
    b = save(tmp_path / "b.pth", spec, other, torch_prep())
    code, report = run_audit(a, b)
    assert (code, report["verdict"], report["causes"]) == (1, "different", [])
    assert report["top1_agreement"] < 1.0 or report["max_abs_diff"] > 0.1


def test_a_flipped_near_tie_is_different_not_equivalent(tmp_path, run_audit):
    """The verdict uses the converters' pass rule: within tolerance *and* the same top-1.  With the fc
    weights zeroed every image gets the bias as logits; B swaps a near-tie (gap 1e-7 of the largest
    logit, far inside the tolerance), so every top-1 flips: "different", exit 1."""
    spec, sd = _base("resnet18")
    bias = torch.linspace(0.0, 0.5, spec.num_classes)
    bias[0] = 1.0
    bias[1] = 1.0 - 1e-7
    flipped = bias.clone()
    flipped[0], flipped[1] = bias[1], bias[0]
    zero = torch.zeros_like(sd["fc.weight"])
    a = save(tmp_path / "a.pth", spec, dict(sd, **{"fc.weight": zero, "fc.bias": bias}), torch_prep())
    b = save(tmp_path / "b.pth", spec, dict(sd, **{"fc.weight": zero, "fc.bias": flipped}), torch_prep())
    code, report = run_audit(a, b)
    assert report["max_abs_diff"] <= DEFAULT_RTOL and report["top1_agreement"] == 0.0
    assert (code, report["verdict"]) == (1, "different")
