#!/usr/bin/env bash
# Create the peer virtual environment `.venv-peer` (repo root) that runs the real MXNet 1.9.1 and
# onnxruntime for the test fixtures.  MXNet needs numpy 1.23.5 (numpy >= 1.24 removed the aliases it
# uses), which the toolkit's own environment must not be pinned to: hence a venv of its own.
# The version set is the one ../shared/reference/PEERS.md records as installing and working together:
# onnx must stay <= 1.18.0 for MXNet's ONNX exporter (it imports onnx.mapping, removed in 1.19).
#
# Idempotent and quick: when the venv already imports the pinned versions, it does nothing.
# Usage: bash tests/peers/setup_peer_env.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-peer
PINS=(mxnet==1.9.1 numpy==1.23.5 graphviz==0.8.4 onnx==1.18.0 onnxruntime==1.32.0 protobuf==7.36.2)
# GluonCV's model code (the referee of its ResNetV1b / CIFAR nets): installed --no-deps, since its package
# dependencies (opencv, ...) are not needed to load gluoncv/model_zoo/resnetv1b.py and cifarresnet.py.
GLUONCV_PIN=gluoncv==0.10.5.post0
PYTHON=${PEER_PYTHON:-python3}

check() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md
want = {"mxnet": "1.9.1", "numpy": "1.23.5", "onnx": "1.18.0", "onnxruntime": "1.32.0", "protobuf": "7.36.2",
        "gluoncv": "0.10.5.post0"}
bad = {k: md.version(k) for k in want if md.version(k) != want[k]}
raise SystemExit(1 if bad else 0)
PY
}

if [ "${1:-}" != "--force" ] && [ -x "$VENV/bin/python" ] && check; then
    echo "== peer env: $VENV already has ${PINS[*]}"
    exit 0
fi

echo "== peer env: creating $VENV with ${PINS[*]}"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
"$VENV/bin/python" -m pip install --quiet --no-deps "$GLUONCV_PIN"
"$VENV/bin/python" -c "import mxnet, onnx, onnxruntime, numpy; print('== peer env: mxnet', mxnet.__version__, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
check || { echo "peer env: $VENV does not hold the pinned versions" >&2; exit 1; }
