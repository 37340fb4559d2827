"""Check a built wheel of resnet-port: `resnet_port` is its only top-level import package, and every
module of the repository's package folders is inside it under its `resnet_port.` name.

Usage: python .ci/check_wheel.py dist/resnet_port-*.whl
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def expected_modules() -> set[str]:
    """Every .py file of the mapped folders, as the wheel must hold it (resnet_port/...)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    wanted: set[str] = set()
    for package, folder in config["package-dir"].items():
        root = REPO / folder
        for path in root.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(root).as_posix()
            wanted.add("/".join(package.split(".")) + "/" + relative)
    return wanted


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with zipfile.ZipFile(argv[0]) as wheel:
        names = wheel.namelist()
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    problems = []
    if top_level != {"resnet_port"}:
        problems.append(f"top-level entries {sorted(top_level)}; expected only ['resnet_port']")
    missing = sorted(expected_modules() - set(names))
    if missing:
        problems.append(f"{len(missing)} modules missing from the wheel, e.g. {missing[:5]}")
    for problem in problems:
        print(f"check_wheel: {argv[0]}: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {argv[0]}: only resnet_port, {len(names)} files, every module present")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
