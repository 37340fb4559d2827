"""One import namespace: every module of the project is `resnet_port.<...>`.

The repository keeps its top-level folders (converters/, resnet_ref/, ...); pyproject maps each onto a
subpackage of `resnet_port`.  These checks fail when a folder is added without its mapping, or when code
imports a folder by its bare name (which works only from a checkout, and collides with other PyPI
distributions of those names once installed)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("resnet_port", "resnet_ref", "converters", "checkpoints", "validation", "audit", "finetune")
BARE = set(FOLDERS) - {"resnet_port"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_mapped_and_listed():
    config = _setuptools()
    mapped = {folder: package for package, folder in config["package-dir"].items()}
    listed = set(config["packages"])
    for folder in FOLDERS:
        assert folder in mapped, f"{folder}/ has no package-dir entry"
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            sub = init.parent.relative_to(REPO / folder).parts
            package = ".".join((mapped[folder], *sub))
            assert package in listed, f"{init.parent} ({package}) is not in [tool.setuptools] packages"
    assert all(package == "resnet_port" or package.startswith("resnet_port.") for package in listed)


def _python_files():
    for folder in (*FOLDERS, "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                yield path


def test_no_module_imports_a_folder_by_its_bare_name():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {name}" for name in names if name.split(".")[0] in BARE]
    assert not offenders, "bare imports: " + ", ".join(offenders)


def test_console_scripts_point_into_the_namespace():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("resnet-port", "convert-caffe", "convert-mxnet", "convert-onnx", "validate", "audit", "inspect-checkpoint", "convert-solver", "recalibrate-bn"):
        assert scripts[name].startswith("resnet_port."), f"{name} -> {scripts[name]}"
