"""Layer by layer: audit says where two ports part.

Every expected location here comes from what the test injected (the module whose tensor it
changed, the spec field it flipped and the module that field builds), never from the audit's own
output; the sizes of the differences are checked against the test's own forward hooks.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from resnet_port.audit import DEFAULT_RTOL, InputSet, audit, load_side
from resnet_port.audit.cli import main
from resnet_port.resnet_ref import ResNetSpec, build_model
from tests.audit.pairs import network_input, random_state_dict, sample_images, save, small_spec, torch_prep
from tests.audit.test_diagnosis import CLEAN, INJECTIONS

ROW_KEYS = {"name", "max_abs_diff", "rel_diff", "cosine"}


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _block(module: str) -> str:
    """The --layers blocks row a module is part of: layer3.1.bn2 -> layer3.1 (its residual block),
    conv1.3 -> conv1 (a deep stem)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0].startswith("layer") else parts[0]


def _blocks_order(spec: ResNetSpec) -> list[str]:
    """The rows of --layers blocks, written out from the spec: stem, each block, head."""
    names = ["data_bn"] if spec.input_bn != "none" else []
    names += ["conv1", "bn1"] + (["maxpool"] if spec.stem_pool != "none" else [])
    names += [f"layer{s + 1}.{b}" for s, count in enumerate(spec.layers) for b in range(count)]
    names += ["final_bn"] if spec.residual == "v2" else []
    return names + ["avgpool", "fc"]


def _own_outputs(spec: ResNetSpec, sd: dict[str, torch.Tensor], x: torch.Tensor, module: str) -> torch.Tensor:
    """The test's own reading of one module's output: a hook on a freshly built model."""
    model = build_model(spec)
    full = model.state_dict()
    full.update(sd)
    model.load_state_dict(full)
    caught = []
    handle = model.get_submodule(module).register_forward_hook(lambda m, i, o: caught.append(o.detach().clone()))
    with torch.inference_mode():
        model.eval()(x)
    handle.remove()
    return caught[0].double()


def _audit_pair(tmp_path, spec_a, sd_a, spec_b, sd_b, mode, prep_a=None, prep_b=None):
    prep_a, prep_b = prep_a or torch_prep(), prep_b or torch_prep()
    a = load_side("A", save(tmp_path / "a.pth", spec_a, sd_a, prep_a))
    b = load_side("B", save(tmp_path / "b.pth", spec_b, sd_b, prep_b))
    images = [torch.from_numpy(image) for image in sample_images()]
    return audit(a, b, InputSet("test images", images=images), layers=mode)


# -- one corrupted module deep in the net -------------------------------------------------------
def _bn_stats(sd, module):
    gen = torch.Generator().manual_seed(11)
    bad = dict(sd)
    bad[f"{module}.running_mean"] = sd[f"{module}.running_mean"] + 0.3 * torch.randn(
        sd[f"{module}.running_mean"].shape, generator=gen
    )
    bad[f"{module}.running_var"] = sd[f"{module}.running_var"] * 2.5
    return bad


def _conv_weight(sd, module):
    gen = torch.Generator().manual_seed(12)
    w = sd[f"{module}.weight"]
    return dict(sd, **{f"{module}.weight": w + 0.2 * w.std() * torch.randn(w.shape, generator=gen)})


DEEP = {
    # (arch, blocks per stage, corrupt, module): a module well inside the net, never the first of a stage
    "bottleneck_bn_stats_layer3": ("resnet50", (2, 2, 3, 2), _bn_stats, "layer3.2.bn2"),
    "bottleneck_conv_layer4": ("resnet50", (2, 2, 2, 2), _conv_weight, "layer4.1.conv2"),
    "basic_bn_stats_layer3": ("resnet18", (2, 2, 2, 2), _bn_stats, "layer3.1.bn1"),
    "basic_conv_layer4": ("resnet18", (2, 2, 2, 2), _conv_weight, "layer4.1.conv1"),
    # the shortcut runs before the block's body: its conv is where the outputs part
    "shortcut_conv_layer3": ("resnet50", (1, 1, 2, 1), _conv_weight, "layer3.0.downsample.0"),
    "pre_activation_bn_layer3": ("mxnet_resnet50", (1, 1, 2, 1), _bn_stats, "layer3.1.bn3"),
    # a deep stem (three 3x3 convs, timm's indices) and the avg-down shortcut (pool, conv, BN)
    "deep_stem_middle_conv": ("resnet50_v1d", (1, 1, 1, 1), _conv_weight, "conv1.3"),
    "avg_down_shortcut_bn_layer4": ("resnet50_v1d", (1, 1, 1, 2), _bn_stats, "layer4.0.downsample.2"),
}


@pytest.mark.parametrize("mode", ["blocks", "fine"])
@pytest.mark.parametrize("case", sorted(DEEP))
def test_one_corrupted_module_is_located_exactly(case, mode, tmp_path):
    arch, layers, corrupt, module = DEEP[case]
    spec = small_spec(arch, layers=layers)
    sd = random_state_dict(spec, 5)
    bad = corrupt(sd, module)
    result = _audit_pair(tmp_path, spec, sd, spec, bad, mode)
    expected = module if mode == "fine" else _block(module)
    assert result.layers.first_divergent == expected
    rows = result.layers.rows
    names = [row["name"] for row in rows]
    before = names[: names.index(expected)]
    assert before or expected == "conv1", "rows come before the corrupted module"
    assert all(row["rel_diff"] is not None and row["rel_diff"] <= DEFAULT_RTOL for row in rows[: len(before)])
    if mode == "blocks":
        assert names == _blocks_order(spec)
    else:
        assert module in names and set(_blocks_order(spec)) <= set(names)
    # the size of the difference at the corrupted module, by the test's own hooks
    images = sample_images()
    x = network_input(images, torch_prep())
    own_a, own_b = _own_outputs(spec, sd, x, expected), _own_outputs(spec, bad, x, expected)
    own_rel = float((own_a - own_b).abs().max() / own_a.abs().max())
    row = rows[names.index(expected)]
    assert own_rel > 10 * DEFAULT_RTOL
    assert row["rel_diff"] == pytest.approx(own_rel, rel=1e-3)
    own_cos = float(torch.nn.functional.cosine_similarity(own_a.flatten(), own_b.flatten(), dim=0))
    assert row["cosine"] == pytest.approx(own_cos, abs=1e-6)


# -- known causes: the divergence starts where the cause acts -----------------------------------
def _first_module(spec: ResNetSpec) -> str:
    return "data_bn" if spec.input_bn != "none" else "conv1"


def _first_bn(spec: ResNetSpec) -> str:
    assert spec.stem == "7x7" and spec.input_bn == "none"  # the test's precondition: bn1 is the first BN
    return "bn1"


def _first_strided_block(spec: ResNetSpec) -> tuple[str, str]:
    # stage 1 has stride 1; stage 2's first block is the first whose stride sits in a conv, and its
    # shortcut (computed first, strided the same either way) agrees: its conv1 is where they part
    assert spec.block == "bottleneck" and len(spec.layers) > 1
    return "layer2.0", "layer2.0.conv1"


# What each injection of test_diagnosis changed, and so the module where A and B first part:
# (blocks, fine).  The input-side causes change what the first module reads.
WHERE = {
    "conv1_not_flipped_same_order": lambda p: ("conv1", "conv1"),  # conv1.weight flipped
    "caffe_port_declared_rgb_without_flip": lambda p: (_first_module(p.spec_b),) * 2,  # input order
    "caffe_bn_factor_not_divided": lambda p: (_first_bn(p.spec_b),) * 2,  # every BN's statistics
    "eps_1e-3_for_1e-5": lambda p: (_first_bn(p.spec_b),) * 2,  # every BN's eps
    "mxnet_fix_gamma_ignored": lambda p: ("bn1", "bn1"),  # bn1 is the first gamma the injection set to 1
    "stride_in_3x3_for_caffe": lambda p: _first_strided_block(p.spec_b),  # stride_in: strided blocks' convs
    "floor_pool_for_caffe_ceil": lambda p: ("maxpool", "maxpool"),  # stem_pool
    "0-255_fed_to_0-1_net": lambda p: (_first_module(p.spec_b),) * 2,  # input scale
    "mean_image_replaced_by_means": lambda p: (_first_module(p.spec_b),) * 2,  # input mean
    "mean_values_forgotten": lambda p: (_first_module(p.spec_b),) * 2,  # input mean
    "mean_image_forgotten": lambda p: (_first_module(p.spec_b),) * 2,  # input mean
    "classifier_rows_permuted": lambda p: ("fc", "fc"),
    "fc_reshaped_not_transposed": lambda p: ("fc", "fc"),
    "square_fc_transposed": lambda p: ("fc", "fc"),
    "caffe_conv1_bias_dropped": lambda p: ("conv1", "conv1"),  # conv1.bias
    "fc_bias_left_at_zero": lambda p: ("fc", "fc"),
}


def test_every_injection_has_a_location():
    assert set(WHERE) == set(INJECTIONS)


@pytest.mark.parametrize("mode", ["blocks", "fine"])
@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_known_cause_divergence_starts_where_it_acts(name, mode, tmp_path, run_audit):
    cause, make = INJECTIONS[name]
    pair = make()
    blocks, fine = WHERE[name](pair)
    expected = fine if mode == "fine" else blocks
    a, b = pair.write(tmp_path)
    code, report = run_audit(a, b, "--layers", mode)
    assert code == 1
    assert report["first_divergent_layer"] == expected
    (named,) = report["causes"]
    assert named["key"] == cause
    assert named["first_layer"] == expected
    assert f"the layers part at {expected} " in named["evidence"]  # the row where the signature starts
    names = [row["name"] for row in report["layers"]]
    for row in report["layers"][: names.index(expected)]:
        assert row["rel_diff"] <= DEFAULT_RTOL, row


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_same_network_has_no_divergent_layer(name, tmp_path, run_audit):
    verdict, make = CLEAN[name]
    a, b = make().write(tmp_path)
    code, report = run_audit(a, b, "--layers", "fine")
    assert code == 0 and report["first_divergent_layer"] is None
    compared = [row for row in report["layers"] if row["status"] == "compared"]
    assert len(compared) > 20
    assert all(row["rel_diff"] <= DEFAULT_RTOL for row in compared)
    if verdict == "identical":
        assert all(row["max_abs_diff"] == 0 and row["cosine"] == pytest.approx(1.0) for row in compared)


# -- modules on one side only, and the raw-input modules ----------------------------------------
def test_module_on_one_side_only_is_said_and_the_rest_pairs_by_name(tmp_path, capsys):
    spec_a = small_spec("resnet18", stem_pool="none")
    spec_b = spec_a.replace(stem_pool="max")
    sd = random_state_dict(spec_a, 6)
    a = save(tmp_path / "a.pth", spec_a, sd, torch_prep())
    b = save(tmp_path / "b.pth", spec_b, sd, torch_prep())
    out = tmp_path / "r.json"
    assert main([str(a), str(b), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["layers"]}
    assert [row["name"] for row in report["layers"]] == _blocks_order(spec_b)  # B's pool in its place
    assert rows["maxpool"]["status"] == "only_b" and rows["maxpool"]["rel_diff"] is None
    assert rows["conv1"]["max_abs_diff"] == 0 and rows["bn1"]["max_abs_diff"] == 0
    # without the pool B's maps are twice as large: the first block is where the outputs part
    assert report["first_divergent_layer"] == "layer1.0"
    assert rows["layer1.0"]["status"] == "shape" and rows["layer1.0"]["shape_a"] != rows["layer1.0"]["shape_b"]
    assert report["layer_summary"]["only_b"] == ["maxpool"] and report["layer_summary"]["only_a"] == []
    assert "modules only on side B: maxpool" in text


def test_input_bn_in_another_channel_order_is_not_compared(tmp_path, run_audit):
    """A BGR net with a data BN and its correct RGB port: data_bn's outputs are in each side's
    channel order, so they are not compared; from conv1 on the two agree."""
    spec = small_spec("mxnet_resnet50")
    sd = random_state_dict(spec, 7)
    rgb = dict(sd, **{"conv1.weight": sd["conv1.weight"].flip(1).contiguous()})
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        rgb[f"data_bn.{leaf}"] = sd[f"data_bn.{leaf}"].flip(0).contiguous()
    prep = torch_prep(pixel_max=255.0, mean=None, std=None)
    a = save(tmp_path / "a.pth", spec, sd, torch_prep(channel_order="BGR", pixel_max=255.0, mean=None, std=None))
    b = save(tmp_path / "b.pth", spec, rgb, prep)
    code, report = run_audit(a, b, "--layers", "fine")
    assert (code, report["verdict"], report["first_divergent_layer"]) == (0, "equivalent", None)
    assert report["layers"][0]["name"] == "data_bn" and report["layers"][0]["status"] == "input_convention"
    assert report["layers"][1]["name"] == "conv1" and report["layers"][1]["rel_diff"] <= DEFAULT_RTOL


# -- output -------------------------------------------------------------------------------------
def test_text_shows_the_first_divergent_layer_and_its_neighbours(tmp_path, capsys):
    pair = INJECTIONS["floor_pool_for_caffe_ceil"][1]()
    a, b = pair.write(tmp_path)
    assert main([str(a), str(b)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any("first divergent layer: maxpool" in line for line in lines)
    marked = [i for i, line in enumerate(lines) if line.lstrip().startswith("> ")]
    assert len(marked) == 1 and lines[marked[0]].split()[1] == "maxpool"
    i = marked[0]
    assert lines[i - 1].split()[0] == "bn1" and lines[i + 1].split()[0] == "layer1.0"  # the rows around it


def test_json_has_layer_keys(tmp_path, run_audit):
    spec = small_spec("resnet50")
    sd = random_state_dict(spec, 8)
    a = save(tmp_path / "a.pth", spec, sd, torch_prep())
    code, report = run_audit(a, a)
    assert {"first_divergent_layer", "layers", "layer_summary"} <= set(report)
    assert report["layers"] and all(ROW_KEYS <= set(row) for row in report["layers"])
    assert [row["name"] for row in report["layers"]] == _blocks_order(spec)
    code, report = run_audit(a, a, "--layers", "none")
    assert (report["first_divergent_layer"], report["layers"]) == (None, [])


class _Page(HTMLParser):
    """Collects what the HTML test looks at: tags with their attributes, and svg text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.svg_text: list[str] = []
        self.ids_in_svg: set[str] = set()
        self.first_row_text: list[str] = []
        self._in_first_row = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if "svg" in self.stack and attributes.get("id"):
            self.ids_in_svg.add(attributes["id"])
        if attributes.get("id") == "first-divergent-row":
            self._in_first_row = 1
        elif self._in_first_row:
            self._in_first_row += 1
        self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        if self._in_first_row:
            self._in_first_row -= 1

    def handle_data(self, data):
        if "svg" in self.stack:
            self.svg_text.append(data)
        if self._in_first_row:
            self.first_row_text.append(data)


def test_html_page_is_self_contained_and_marks_the_first_divergent_layer(tmp_path):
    pair = INJECTIONS["floor_pool_for_caffe_ceil"][1]()
    a, b = pair.write(tmp_path)
    page = tmp_path / "audit.html"
    assert main([str(a), str(b), "--html", str(page), "-q"]) == 1
    text = page.read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(text)
    parser.close()
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("svg") == 1  # the plot, inline
    assert "first-divergent" in parser.ids_in_svg  # the marked layer in the plot
    assert "first divergent: maxpool" in " ".join(parser.svg_text)
    assert "maxpool" in "".join(parser.first_row_text)  # ... and in the layer table
    assert "log" in text and "verdict: different" in text and "pool_rounding" in text
    assert tags.count("table") >= 4  # sides, causes, layers, tensors
    for tag, attributes in parser.tags:  # no external assets
        assert tag not in ("link", "script", "img", "iframe", "object"), tag
        for key in ("src", "href", "xlink:href"):
            value = attributes.get(key)
            assert value is None or value.startswith("#") or value.startswith("data:"), (tag, key, value)
    assert "url(http" not in text and "@import" not in text


def test_html_without_matplotlib_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    spec = small_spec("resnet18")
    a = save(tmp_path / "a.pth", spec, random_state_dict(spec, 9), torch_prep())
    page = tmp_path / "audit.html"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main([str(a), str(a), "--html", str(page)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "matplotlib" in err and "resnet-port[html]" in err
    assert not page.exists()


def test_layer_rows_are_paired_by_name_not_position(tmp_path):
    """A side with a data BN against one without: every later row still pairs with its namesake."""
    spec_b = small_spec("resnet50", input_bn="affine_free")
    spec_a = spec_b.replace(input_bn="none")
    sd_b = random_state_dict(spec_b, 10)
    # an affine-free data BN with mean 0 and variance 1 - eps is the identity: the nets agree
    sd_b["data_bn.running_mean"] = torch.zeros(3)
    sd_b["data_bn.running_var"] = torch.full((3,), 1.0 - spec_b.bn_eps)
    sd_a = {k: v for k, v in sd_b.items() if not k.startswith("data_bn.")}
    result = _audit_pair(tmp_path, spec_a, sd_a, spec_b, sd_b, "fine")
    names = [row["name"] for row in result.layers.rows]
    assert names[0] == "data_bn" and result.layers.only_b == ["data_bn"] and result.layers.only_a == []
    assert result.layers.first_divergent is None
    assert all(row["rel_diff"] <= 1e-6 for row in result.layers.rows[1:])
    assert np.isclose(result.layers.rows[-1]["cosine"], 1.0)


def test_html_into_a_missing_folder_exits_2_before_any_work(tmp_path, capsys):
    spec = small_spec("resnet18")
    a = save(tmp_path / "a.pth", spec, random_state_dict(spec, 9), torch_prep())
    page = tmp_path / "nowhere" / "audit.html"
    assert main([str(a), str(a), "--html", str(page)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(page) in err
    assert not page.parent.exists()
