"""`audit --html FILE`: the whole audit on one self-contained page.

The page holds the verdict, the causes (and rejected hypotheses), the layer-by-layer table, the
tensor table, and a plot of the relative difference per layer on a log scale with the first
divergent layer marked.  It has no external assets: the plot is matplotlib's SVG written inline
(text kept as text, so the layer names can be searched), the styles are in the page.  matplotlib
is an optional dependency (the ``html`` extra); asking for --html without it is a clear error.
"""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import Path
from typing import Any

from resnet_port.audit.compare import summarize_tensors
from resnet_port.audit.diagnose import AuditResult, side_summary
from resnet_port.audit.layers import LayerComparison, is_divergent
from resnet_port.errors import InputError

# The element of the plot that marks the first divergent layer carries this id (tests look for it).
MARK_ID = "first-divergent"
MISSING_MATPLOTLIB = (
    "--html needs matplotlib, which is not installed; install the 'html' extra: pip install 'resnet-port[html]'"
)
VERDICT_COLOURS = {"identical": "#1a7f37", "equivalent": "#1a7f37", "different": "#b42318"}


def require_matplotlib() -> None:
    """Raise a one-line `InputError` naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise InputError(MISSING_MATPLOTLIB) from exc


def write_html(path: str | Path, result: AuditResult) -> None:
    """Write the page atomically: a failed render leaves no half-written file."""
    from resnet_port.checkpoints.io import atomic_output

    text = render_html(result)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, fmt: str = ".3g") -> str:
    return "&ndash;" if value is None else format(value, fmt)


# -- the plot -----------------------------------------------------------------------------------
def layer_plot_svg(layers: LayerComparison) -> str:
    """Relative difference per layer, log scale, as an inline ``<svg>`` element."""
    require_matplotlib()
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state touched

    rows = layers.rows
    n = len(rows)
    positive = [r["rel_diff"] for r in rows if r["rel_diff"] is not None and r["rel_diff"] > 0]
    floor = 10.0 ** math.floor(math.log10(min(positive + [layers.rtol]))) / 10.0
    top = max(positive + [layers.rtol]) * 10.0
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9}):
        # about page width: deep nets in --layers fine get thinner labels, not a plot to scroll through
        fig = Figure(figsize=(min(max(9.0, 0.17 * n), 15.0), 5.0), layout="constrained")
        ax = fig.add_subplot()
        xs = list(range(n))
        ok_x, ok_y, bad_x, bad_y, zero_x, shape_x, gap_x = [], [], [], [], [], [], []
        for i, row in enumerate(rows):
            if row["status"] in ("shape", "nonfinite"):
                shape_x.append(i)
            elif row["rel_diff"] is None:
                gap_x.append(i)
            elif row["rel_diff"] == 0:
                zero_x.append(i)
            elif is_divergent(row, layers.rtol):
                bad_x.append(i)
                bad_y.append(row["rel_diff"])
            else:
                ok_x.append(i)
                ok_y.append(row["rel_diff"])
        # the line joins what was measured: shapes that differ sit at the top, unpaired rows break it
        line_y = [
            top if i in shape_x else math.nan if r["rel_diff"] is None else max(r["rel_diff"], floor)
            for i, r in enumerate(rows)
        ]
        ax.plot(xs, line_y, color="#9aa4b2", linewidth=0.8, zorder=1)
        if ok_x:
            ax.scatter(ok_x, ok_y, s=16, color="#2563eb", label="within tolerance", zorder=3)
        if bad_x:
            ax.scatter(bad_x, bad_y, s=20, color="#b42318", label="beyond tolerance", zorder=3)
        if zero_x:
            ax.scatter(zero_x, [floor] * len(zero_x), s=16, facecolors="none", edgecolors="#2563eb",
                       label="equal (0, drawn at the floor)", zorder=3)
        if shape_x:
            ax.scatter(shape_x, [top] * len(shape_x), s=36, marker="x", color="#b42318",
                       label="shapes differ / non-finite (drawn at the top)", zorder=3)
        for i in gap_x:
            ax.axvspan(i - 0.4, i + 0.4, color="#e5e7eb", zorder=0)
        if gap_x:
            ax.axvspan(-10, -9, color="#e5e7eb", label="one side only / not comparable")
        ax.axhline(layers.rtol, color="#6b7280", linestyle="--", linewidth=1, label=f"tolerance {layers.rtol:g}")
        index = layers.index(layers.first_divergent)
        if index is not None:
            mark = ax.axvline(index, color="#b42318", linewidth=1.5, zorder=2)
            mark.set_gid(MARK_ID)
            # below the tolerance line, beside the mark: clear of the points beyond tolerance
            right = index < 0.7 * n
            label = ax.annotate(
                f"first divergent: {layers.first_divergent}", xy=(index, math.sqrt(floor * layers.rtol)),
                xytext=(6 if right else -6, 0), textcoords="offset points", color="#b42318", fontweight="bold",
                ha="left" if right else "right", va="center",
            )
            label.set_gid(f"{MARK_ID}-label")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, top * 3)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylabel("max |A - B| / max |A|")
        ax.set_title(f"relative difference per layer ({layers.mode}, forward order)")
        ticks = _tick_rows(rows, index)
        ax.set_xticks(ticks, [rows[i]["name"] for i in ticks], rotation=90, fontsize=7 if len(ticks) <= 80 else 6)
        for tick, i in zip(ax.get_xticklabels(), ticks):
            if i == index:
                tick.set_color("#b42318")
                tick.set_fontweight("bold")
        ax.grid(axis="y", which="major", color="#e5e7eb", linewidth=0.6)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    return svg.strip()


def _tick_rows(rows: list[dict[str, Any]], index: int | None, most: int = 90) -> list[int]:
    """Rows that get a name on the x axis: all of them when few; else the modules outside the
    blocks and the blocks themselves (thinned evenly), always the first divergent one."""
    n = len(rows)
    if n <= most:
        return list(range(n))
    chosen = [i for i, row in enumerate(rows) if row["name"].count(".") <= 1]
    if len(chosen) > most:
        step = math.ceil(len(chosen) / most)
        chosen = chosen[::step]
    if index is not None and index not in chosen:
        chosen = sorted(chosen + [index])
    return chosen


# -- the page -----------------------------------------------------------------------------------
STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; color: #1f2328; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #d0d7de; }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 6px; color: #fff; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, monospace; }
tr.diverges td { background: #fff4f2; } tr.first td { background: #ffd7d0; font-weight: 600; }
tr.oneside td { color: #6b7280; font-style: italic; }
.plot { overflow-x: auto; border: 1px solid #d0d7de; padding: 4px; } .plot svg { width: 100%; height: auto; }
code { font-family: ui-monospace, monospace; font-size: 12.5px; } .muted { color: #6b7280; }
details summary { cursor: pointer; margin: 6px 0; }
"""


def _table(headers: list[str], body: list[str], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cells(values: list[str], numeric: set[int] = frozenset(), cls: str = "", row_id: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{row_id}"' if row_id else "")
    tds = "".join(f'<td class="num">{v}</td>' if i in numeric else f"<td>{v}</td>" for i, v in enumerate(values))
    return f"<tr{attrs}>{tds}</tr>"


def _sides(result: AuditResult) -> str:
    body = []
    for label, side in (("A", result.a), ("B", result.b)):
        info = side_summary(side)
        pre = info["preprocessing"]
        mean = f"mean image {pre['mean_image_shape']}" if pre["mean_image_shape"] else f"mean {pre['mean']}"
        prep = f"{pre['channel_order']} 0-{pre['pixel_max']:g}, {mean}, std {pre['std']}, crop {pre['crop']}"
        body.append(_cells([label, f"<code>{_e(info['path'])}</code>", _e(info["kind"]),
                            _e(info["arch"] or "custom spec"), _e(prep), _e(info["problems"] or "")]))
    return _table(["side", "file", "kind", "arch", "input", "problems"], body)


def _causes(result: AuditResult) -> str:
    if not result.causes and not result.rejected:
        return '<p class="muted">No known porting bug was tested as a cause (none needed, or no signature seen).</p>'
    body = []
    for cause in result.causes:
        body.append(_cells([
            f"<code>{_e(cause.key)}</code>", "named", _e(cause.evidence),
            f"<code>{_e(cause.first_layer or '')}</code>",
            f"{_num(cause.discrepancy_before)} &rarr; {_num(cause.discrepancy_after)}",
        ]))
    for rejected in result.rejected:
        body.append(_cells([f"<code>{_e(rejected['key'])}</code>", "rejected", _e(rejected["evidence"]), "",
                            _e(rejected["reason"])], cls="oneside"))
    return _table(["cause", "status", "evidence", "first layer it changes", "rel logit gap before → after fix"], body)


def _layer_table(layers: LayerComparison, rows: range | None = None, mark_row: bool = True) -> str:
    body = []
    for i in rows if rows is not None else range(len(layers.rows)):
        row = layers.rows[i]
        first = row["name"] == layers.first_divergent
        cls = "first" if first else "diverges" if is_divergent(row, layers.rtol) else ""
        if row["status"] in ("only_a", "only_b"):
            cls, note = "oneside", f"only on side {row['status'][-1].upper()}"
        elif row["status"] == "shape":
            note = f"shapes {row['shape_a']} vs {row['shape_b']}"
        elif row["status"] == "input_convention":
            cls, note = "oneside", "reads the raw input in each side's channel order: not compared"
        elif row["status"] == "nonfinite":
            note = "non-finite outputs"
        else:
            note = "first divergent layer" if first else ""
        body.append(_cells(
            [str(i + 1), f"<code>{_e(row['name'])}</code>", _e(row["type"]), _num(row["max_abs_diff"]),
             _num(row["rel_diff"]), _num(row["cosine"], ".6f"), _e(note)],
            numeric={0, 3, 4, 5}, cls=cls, row_id="first-divergent-row" if first and mark_row else "",
        ))
    return _table(["#", "module", "type", "max abs diff", "rel diff", "cosine", ""], body)


def _layer_tables(layers: LayerComparison, most: int = 60) -> str:
    """All rows when they are few; else the rows around the first divergent one, all rows folded."""
    n = len(layers.rows)
    if n <= most:
        return _layer_table(layers)
    index = layers.index(layers.first_divergent)
    if index is None:
        return f"<details><summary>all {n} rows</summary>{_layer_table(layers)}</details>"
    near = range(max(0, index - 4), min(n, index + 9))
    return (
        f"<p>Rows {near.start + 1}&ndash;{near.stop} of {n}, around the first divergent layer:</p>"
        + _layer_table(layers, near)
        + f"<details><summary>all {n} rows</summary>{_layer_table(layers, mark_row=False)}</details>"
    )


def _tensor_tables(result: AuditResult) -> str:
    summary = []
    for kind, entry in summarize_tensors(result.tensors).items():
        summary.append(_cells(
            [_e(kind), str(entry["count"]), str(entry.get("equal", 0)), str(entry.get("close", 0)),
             str(entry.get("differs", 0)), str(entry.get("shape", 0)),
             str(entry.get("only_a", 0) + entry.get("only_b", 0)), _num(entry["max_abs_diff"]),
             _num(entry["max_rel_diff"]), _num(entry["min_cosine"], ".6f")],
            numeric=set(range(1, 10)),
        ))
    parts = [_table(["kind", "count", "equal", "close", "differ", "shape", "one side", "max abs", "max rel",
                     "min cos"], summary)]

    def rows(selected: list[dict[str, Any]]) -> str:
        body = []
        for row in selected:
            shapes = row["shape_a"] if row["shape_a"] == row["shape_b"] else f"{row['shape_a']} vs {row['shape_b']}"
            body.append(_cells(
                [f"<code>{_e(row['name'])}</code>", _e(row["kind"]), _e(row["status"]), _e(shapes),
                 _num(row["max_abs_diff"]), _num(row["max_rel_diff"]), _num(row["cosine"], ".6f")],
                numeric={4, 5, 6}, cls="" if row["status"] in ("equal", "close") else "diverges",
            ))
        return _table(["tensor", "kind", "status", "shape", "max abs diff", "max rel diff", "cosine"], body)

    differing = [row for row in result.tensors if row["status"] != "equal"]
    if differing:
        parts.append(f"<p>{len(differing)} of {len(result.tensors)} tensors are not bit-equal:</p>")
        parts.append(rows(differing))
    else:
        parts.append(f"<p>All {len(result.tensors)} tensors are bit-equal.</p>")
    parts.append(f"<details><summary>every tensor ({len(result.tensors)})</summary>{rows(result.tensors)}</details>")
    return "".join(parts)


def render_html(result: AuditResult) -> str:
    """The page, as one string."""
    colour = VERDICT_COLOURS.get(result.verdict, "#57606a")
    keys = ", ".join(c.key for c in result.causes)
    out = result.outputs
    if out.get("comparable"):
        outputs = (
            f"max |logit diff| {out['max_abs_diff']:.3g} ({out['max_rel_diff']:.3g} of max |logit| "
            f"{out['max_abs_reference']:.3g}), top-1 agreement {out['top1_agreement']:.0%}, KL {out['kl_divergence']:.3g} "
            f"on {out['samples']} images ({_e(result.inputs.get('source', 'inputs'))})"
        )
    else:
        outputs = f"outputs not comparable: {_e(out.get('reason'))}"
    layers = result.layers
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>audit: {_e(result.a.path.name)} vs {_e(result.b.path.name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>audit: <code>{_e(result.a.path.name)}</code> vs <code>{_e(result.b.path.name)}</code></h1>",
        f'<p><span class="verdict" style="background:{colour}">verdict: {_e(result.verdict)}</span> '
        f"{_e(': ' + keys) if keys else ''} <span class=\"muted\">(tolerance {result.rtol:g} of max |logit|)</span></p>",
        f"<p>{outputs}</p>",
    ]
    if layers is not None and layers.mode != "none":
        if layers.first_divergent:
            row = layers.row(layers.first_divergent)
            if row["status"] == "shape":
                how = f"output shapes {row['shape_a']} on A, {row['shape_b']} on B"
            elif row["rel_diff"] is None:
                how = "non-finite outputs"
            else:
                how = f"rel diff {_num(row['rel_diff'])}, cosine {_num(row['cosine'], '.6f')}"
            parts.append(f'<p>First divergent layer: <a href="#first-divergent-row"><code>{_e(layers.first_divergent)}'
                         f"</code></a> ({how}).</p>")
        elif layers.rows:
            parts.append(f"<p>No layer differs by more than {layers.rtol:g} (relative).</p>")
    parts.append(_sides(result))
    parts.append("<h2>Causes</h2>" + _causes(result))
    for note in result.notes:
        parts.append(f'<p class="muted">note: {_e(note)}</p>')
    parts.append("<h2>Where the layers part</h2>")
    if layers is None or not layers.rows:
        reason = "no layer comparison" if layers is None else layers.reason
        parts.append(f'<p class="muted">Layers not compared: {_e(reason)}.</p>')
    else:
        parts.append(f'<div class="plot">{layer_plot_svg(layers)}</div>')
        parts.append(
            f'<p class="muted">One row per reference module in forward order ({_e(layers.mode)}); both sides are '
            "built on their own spec so modules pair by name. rel diff = max |A &minus; B| / max |A| over the "
            "module's output on all images.</p>"
        )
        for side, names in (("A", layers.only_a), ("B", layers.only_b)):
            if names:
                parts.append(f"<p>Modules only on side {side}: {_e(', '.join(names))}</p>")
        parts.append(_layer_tables(layers))
    parts.append("<h2>Spec</h2>")
    if result.spec_diff:
        parts.append(_table(["field", "A", "B"], [_cells([_e(r["field"]), _e(r["a"]), _e(r["b"])])
                                                   for r in result.spec_diff]))
    else:
        parts.append("<p>The specs are equal.</p>")
    if result.eps:
        parts.append(_table(["BatchNorm", "eps A", "eps B"],
                            [_cells([_e(r["module"]), _e(r["eps_a"]), _e(r["eps_b"])]) for r in result.eps]))
    parts.append("<h2>Tensors</h2>" + _tensor_tables(result))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
