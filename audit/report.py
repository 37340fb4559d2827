"""The readable table `audit` prints; the JSON form is `AuditResult.to_dict`."""

from __future__ import annotations

from typing import Any

from resnet_port.audit.compare import summarize_tensors
from resnet_port.audit.diagnose import AuditResult, side_summary

KIND_NAMES = {"conv": "conv weights", "bn_stats": "BN statistics", "bn_affine": "BN affine", "fc": "classifier"}


def _num(value: Any, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def format_result(result: AuditResult, all_tensors: bool = False, worst: int = 8) -> str:
    lines = []
    for label, side in (("A", result.a), ("B", result.b)):
        info = side_summary(side)
        pre = info["preprocessing"]
        mean = f"mean image {pre['mean_image_shape']}" if pre["mean_image_shape"] else f"mean {pre['mean']}"
        lines.append(f"{label}  {info['path']}  [{info['kind']}, {info['arch'] or 'custom spec'}]")
        lines.append(f"   input {pre['channel_order']} 0-{pre['pixel_max']:g}, {mean}, std {pre['std']}, crop {pre['crop']}")
        if info["problems"]:
            lines.append(f"   does not fit its spec: {info['problems']}")
    lines.append("")
    if result.spec_diff:
        lines.append("spec differences")
        lines.extend(f"  {row['field']:<18} A {row['a']!r:<28} B {row['b']!r}" for row in result.spec_diff)
    else:
        lines.append("spec              equal")
    if result.eps:
        lines.append(f"BN eps            differs in {len(result.eps)} layer(s), e.g. {result.eps[0]['module']}: "
                     f"A {result.eps[0]['eps_a']:g}, B {result.eps[0]['eps_b']:g}")
    lines.append("")
    lines.append(f"{'tensors':<16}{'count':>6}{'equal':>7}{'close':>7}{'differ':>8}{'shape':>7}{'one side':>10}"
                 f"{'max abs':>11}{'max rel':>10}{'min cos':>10}")
    for kind, entry in summarize_tensors(result.tensors).items():
        lines.append(
            f"  {KIND_NAMES.get(kind, kind):<14}{entry['count']:>6}{entry.get('equal', 0):>7}{entry.get('close', 0):>7}"
            f"{entry.get('differs', 0):>8}{entry.get('shape', 0):>7}{entry.get('only_a', 0) + entry.get('only_b', 0):>10}"
            f"{_num(entry['max_abs_diff']):>11}{_num(entry['max_rel_diff']):>10}{_num(entry['min_cosine'], '.6f'):>10}"
        )
    shown = [r for r in result.tensors if r["status"] not in ("equal",)]
    shown.sort(key=lambda r: -(r["max_rel_diff"] if r["max_rel_diff"] is not None else float("inf")))
    if not all_tensors:
        shown = shown[:worst]
    if shown:
        lines.append("  " + ("differing tensors" if all_tensors else f"largest differences (up to {worst}; --all-tensors lists all)"))
        for row in shown:
            shapes = row["shape_a"] if row["shape_a"] == row["shape_b"] else f"{row['shape_a']} vs {row['shape_b']}"
            lines.append(
                f"    {row['name']:<34} {row['status']:<8} {str(shapes):<22} abs {_num(row['max_abs_diff'])}"
                f"  rel {_num(row['max_rel_diff'])}  cos {_num(row['cosine'], '.6f')}"
            )
    lines.append("")
    out = result.outputs
    if out.get("comparable"):
        lines.append(
            f"outputs ({result.inputs.get('source', 'inputs')}, {out['samples']} images): max |logit diff| "
            f"{out['max_abs_diff']:.3g} ({out['max_rel_diff']:.3g} of max |logit| "
            f"{out['max_abs_reference']:.3g}), top-1 agreement {out['top1_agreement']:.0%}, KL {out['kl_divergence']:.3g}"
        )
    else:
        lines.append(f"outputs           not comparable: {out.get('reason')}")
    lines.append("")
    lines.extend(format_layers(result))
    for cause in result.causes:
        after = "" if cause.discrepancy_after is None else f"  [undoing it: {_num(cause.discrepancy_before)} -> {_num(cause.discrepancy_after)}]"
        lines.append(f"cause {cause.key:<17} {cause.evidence}{after}")
    for rejected in result.rejected:
        lines.append(f"not   {rejected['key']:<17} {rejected['evidence']} ({rejected['reason']})")
    for note in result.notes:
        lines.append(f"note  {note}")
    tolerance = f" (tolerance {result.rtol:g} of max |logit|)" if result.verdict == "equivalent" else ""
    keys = f": {', '.join(c.key for c in result.causes)}" if result.causes else ""
    lines.append(f"verdict  {result.verdict}{tolerance}{keys}")
    return "\n".join(lines)


def _layer_line(row: dict[str, Any], mark: str) -> str:
    if row["status"] == "shape":
        detail = f"output shape {row['shape_a']} vs {row['shape_b']}"
    elif row["status"] in ("only_a", "only_b"):
        detail = f"only on side {row['status'][-1].upper()}"
    elif row["status"] == "input_convention":
        detail = "reads the raw input, in each side's own channel order: not compared"
    elif row["rel_diff"] is None:
        detail = "non-finite outputs"
    else:
        detail = f"abs {_num(row['max_abs_diff'])}  rel {_num(row['rel_diff'])}  cos {_num(row['cosine'], '.6f')}"
    return f"  {mark} {row['name']:<26} {row['type']:<18} {detail}"


def format_layers(result: AuditResult, before: int = 2, after: int = 3) -> list[str]:
    """The first divergent layer and the rows around it (all rows are in --json and --html)."""
    layers = result.layers
    if layers is None or layers.mode == "none":
        return []
    if not layers.rows:
        return [f"layers            not compared: {layers.reason}", ""]
    compared = [row for row in layers.rows if row["rel_diff"] is not None]
    lines = []
    if layers.first_divergent is None:
        worst = max(compared, key=lambda row: row["rel_diff"], default=None)
        tail = f", largest rel diff {worst['rel_diff']:.3g} at {worst['name']}" if worst else ""
        lines.append(f"layers            {len(compared)} modules ({layers.mode}) agree within {layers.rtol:g}{tail}")
    else:
        index = layers.index(layers.first_divergent)
        lines.append(
            f"layers            first divergent layer: {layers.first_divergent} "
            f"(row {index + 1} of {len(layers.rows)}, {layers.mode}; rel diff = max|A-B| / max|A|, tolerance {layers.rtol:g})"
        )
        lo, hi = max(0, index - before), min(len(layers.rows), index + after + 1)
        if lo > 0:
            lines.append(f"    ... {lo} earlier row(s) agree")
        for i in range(lo, hi):
            lines.append(_layer_line(layers.rows[i], ">" if i == index else " "))
        if hi < len(layers.rows):
            lines.append(f"    ... {len(layers.rows) - hi} more row(s) (--json or --html for all)")
    for side, names in (("A", layers.only_a), ("B", layers.only_b)):
        if names:
            lines.append(f"  modules only on side {side}: {', '.join(names)}")
    lines.append("")
    return lines
