"""`resnet-port demo`: the whole job end to end on a fresh machine, with no user files.

1. Make a Caffe ResNet in the release's layout (seeded weights, BatchNorm statistics stored with
   Caffe's scale factor) and write it with the project's own caffemodel writer.
2. `convert-caffe` it back, with `--verify`: the independent Caffe-graph interpreter runs the source
   net and the converted model on the same inputs, and the difference is recorded.
3. Check the round trip against the weights we started from, save the checkpoint as `.pth` and
   `.safetensors`, reload both bit-exactly, and print the checkpoint summary.
4. Evaluate the converted checkpoint with the 10-crop protocol on real photos that scikit-image ships
   (the weights are random, so the accuracy says nothing; the pipeline is what runs).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch



def _seeded_reference(arch: str, seed: int) -> torch.nn.Module:
    from resnet_port.resnet_ref import create_model

    torch.manual_seed(seed)
    model = create_model(arch).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # statistics that matter, as trained nets have
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                module.running_var.copy_(0.5 + torch.rand(c, generator=g))
                module.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.out_channels, generator=g))
        # Keep activations O(1) through the depth: damp each residual branch's last BN.
        for name, module in model.named_modules():
            if name.endswith("bn3") or (name.endswith("bn2") and model.spec.block == "basic"):
                module.weight.mul_(0.2)
    return model


def run_demo(arch: str = "caffe_resnet50", out_dir: Path | None = None, crops: int = 10, seed: int = 0) -> dict[str, Any]:
    from resnet_port.checkpoints import load_model, save_checkpoint
    from resnet_port.checkpoints.inspect import format_summary, summarize
    from resnet_port.converters.caffe import convert_caffe, write_caffemodel
    from resnet_port.converters.caffe.export import export_caffe
    from resnet_port.converters.common import PARITY_RTOL, compare_logits, run_converted
    from resnet_port.resnet_ref import arch_info

    if arch_info(arch).family != "caffe":
        from resnet_port.errors import InputError

        raise InputError(f"the demo starts from a Caffe release layout; pick one of caffe_resnet50/101/152, not {arch}")
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="resnet-port-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"arch": arch, "work_dir": str(work)}

    # 1. a Caffe model written by the project's own writer
    reference = _seeded_reference(arch, seed)
    text, net, blobs = export_caffe(reference.spec, reference.state_dict(), name=f"{arch}-demo")
    prototxt = work / f"{arch}-deploy.prototxt"
    prototxt.write_text(text)
    caffemodel = write_caffemodel(work / f"{arch}.caffemodel", net, blobs)
    print(f"[1/4] wrote {caffemodel.name} ({caffemodel.stat().st_size / 1e6:.1f} MB, {len(net.layer)} layers) and {prototxt.name}")

    # 2. convert it back and verify against the independent interpreter
    conversion = convert_caffe(caffemodel, prototxt=prototxt, mean_values=(104.0, 117.0, 123.0), verify=True)
    check = conversion.metadata.verification
    result["conversion"] = {
        "arch": conversion.metadata.arch,
        "mapped_tensors": len(conversion.report.mapped),
        "skipped": conversion.report.skipped,
        "verification": check,
    }
    print(f"[2/4] convert-caffe: {conversion.metadata.arch}, {len(conversion.report.mapped)} tensors mapped, "
          f"{len(conversion.report.skipped)} skipped; interpreter vs converted: max |diff| {check['max_abs_diff']:.3g} "
          f"({check['max_rel_diff']:.2g} of the largest logit), top-1 agreement {check['top1_agreement']:.0%}")

    # 3. round trip against where we started, then the checkpoint files
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-120, 135, (2, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        start = reference(x)
    against_start = compare_logits(start, run_converted(conversion, x))
    result["round_trip"] = against_start
    files = {}
    for suffix in (".pth", ".safetensors"):
        path = work / f"{arch}{suffix}"
        save_checkpoint(path, conversion.spec, conversion.state_dict, conversion.metadata)
        loaded, _ = load_model(path)
        exact = all(torch.equal(loaded.state_dict()[k], v) for k, v in conversion.state_dict.items())
        files[suffix] = {"path": str(path), "weights_bit_exact": exact}
    result["files"] = files
    print(f"[3/4] original vs converted logits: max |diff| {against_start['max_abs_diff']:.3g}; "
          f"saved {', '.join(Path(f['path']).name for f in files.values())}, reloaded bit-exact: "
          f"{all(f['weights_bit_exact'] for f in files.values())}\n")
    print(format_summary(summarize(work / f"{arch}.safetensors")))

    # 4. the evaluation protocol on real photos
    from resnet_port.validation.sample import run_sample_validation

    model, metadata = load_model(work / f"{arch}.pth")
    evaluation = run_sample_validation(model, metadata, work / "photos", crops=crops)
    result["validation"] = {k: evaluation[k] for k in ("images", "crops", "top1", "top5", "images_per_s") if k in evaluation}
    print(f"\n[4/4] validate --crops {crops} on {evaluation['images']} bundled photos: top-1 {evaluation['top1']:.2f}, "
          f"top-5 {evaluation['top5']:.2f} ({evaluation['images_per_s']:.1f} images/s; random weights, so the "
          "accuracy is meaningless: the protocol is what ran)")
    result["ok"] = bool(
        check["max_rel_diff"] <= PARITY_RTOL
        and check["top1_agreement"] == 1.0
        and against_start["max_rel_diff"] <= PARITY_RTOL
        and all(f["weights_bit_exact"] for f in files.values())
    )
    print(f"\nresult: {'OK' if result['ok'] else 'FAILED'} (files in {work})")
    return result
