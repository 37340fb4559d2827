"""Benchmark: converting a ResNet-152-size caffemodel, against reading its bytes once (the limit).

Writes the real ResNet-152 deploy prototxt with seeded weights through the toolkit's writer
(about 230 MB, as the release's file), then times, each in a fresh process so that peak memory
(ru_maxrss) is its own:

- ``read_bytes``: reading the file's bytes from disk once (page cache warm, as for the others);
- ``protobuf_parse``: protobuf's own full parse of the file (what a naive reader would do);
- ``read_caffemodel``: this toolkit's reader (memory-mapped; blobs are views, no copy);
- ``convert``: the whole ``convert_caffe`` (reader, mapping, state_dict, strict fit check);
- ``baseline``: nothing, to show the measuring itself costs nothing.

Usage: python benchmarks/bench_convert_caffe.py [--repeat 3] [--out benchmarks/results/bench_convert_caffe.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOTXT = Path(os.environ.get("RESNET_PORT_SHARED", ROOT.parent / "shared")) / "reference" / "caffe" / "ResNet-152-deploy.prototxt"


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak-RSS mark (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child(task: str, path: str) -> dict:
    import torch  # noqa: F401 - every task pays the same import, so peaks compare

    if task == "convert":
        # Warm the one-off imports of the conversion path on a tiny net, outside the timing.
        from resnet_port.converters.caffe import convert_caffe, parse_prototxt, write_caffemodel
        from tests.caffe.netgen import resnet_prototxt, weights_for

        with tempfile.TemporaryDirectory() as folder:
            net = parse_prototxt(resnet_prototxt())
            convert_caffe(write_caffemodel(Path(folder) / "warm.caffemodel", net, weights_for(net)))
    _reset_peak()
    start_rss = _status_mb("VmRSS")
    start = time.perf_counter()
    if task == "read_bytes":
        size = len(Path(path).read_bytes())
    elif task == "protobuf_parse":
        from resnet_port.converters.caffe import message_class

        net = message_class("NetParameter")()
        net.ParseFromString(Path(path).read_bytes())
        size = len(net.layer)
    elif task == "read_caffemodel":
        from resnet_port.converters.caffe import read_caffemodel

        model = read_caffemodel(path)
        size = sum(b.size for blobs in model.blobs.values() for b in blobs)
    elif task == "convert":
        from resnet_port.converters.caffe import convert_caffe

        conversion = convert_caffe(path)
        size = sum(t.numel() for t in conversion.state_dict.values())
    elif task == "baseline":
        size = 0
    else:
        raise SystemExit(f"unknown task {task}")
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {"task": task, "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": start_rss, "peak_above_start_mb": peak - start_rss, "size": size}


def run_child(task: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, str(path)], capture_output=True, text=True, env=env, cwd=ROOT, check=False
    )
    if out.returncode:
        raise SystemExit(f"{task} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_convert_caffe.json")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    sys.path.insert(0, str(ROOT))
    from tqdm import tqdm

    from resnet_port.converters.caffe import parse_prototxt, write_caffemodel
    from tests.caffe.netgen import weights_for

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ResNet-152.caffemodel"
        net = parse_prototxt(PROTOTXT.read_text())
        start = time.perf_counter()
        write_caffemodel(path, net, weights_for(net, seed=0))
        write_seconds = time.perf_counter() - start
        size = path.stat().st_size
        tasks = ["baseline", "read_bytes", "protobuf_parse", "read_caffemodel", "convert"]
        runs: dict[str, list[dict]] = {t: [] for t in tasks}
        for _ in tqdm(range(args.repeat), desc="rounds"):
            for task in tasks:
                runs[task].append(run_child(task, path))
    best = {t: min(r["seconds"] for r in rs) for t, rs in runs.items()}
    peak = {t: max(r["peak_above_start_mb"] for r in rs) for t, rs in runs.items()}
    result = {
        "benchmark": "convert-caffe on a ResNet-152-size caffemodel (real prototxt, seeded weights, toolkit writer)",
        "file_bytes": size,
        "write_seconds": write_seconds,
        "repeat": args.repeat,
        "best_seconds": best,
        "peak_rss_growth_mb": peak,
        "ratio_to_read_bytes": {t: best[t] / best["read_bytes"] for t in tasks if t != "baseline"},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS", "1")},
        "notes": "page cache warm for every task; each task in a fresh process with torch imported; "
        "peak_rss_growth_mb = peak RSS during the task (VmHWM reset via clear_refs) minus RSS before it. "
        "read_caffemodel maps the file: its blobs are views of the page cache (counted in RSS only as pages are touched). "
        "convert includes the SHA-256 of the source file recorded in the metadata and the float32 state_dict it returns.",
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("file_bytes", "best_seconds", "peak_rss_growth_mb", "ratio_to_read_bytes")}, indent=2))


if __name__ == "__main__":
    main()
