"""Loading untrusted training checkpoints without running any of their code.

Training scripts pickle more than tensors: torchvision's ``train.py`` stores its ``argparse.Namespace``,
mmengine its ``HistoryBuffer`` objects, many scripts numpy scalars.  torch's weights-only unpickler
refuses every such global.  Here each global the file names is looked at *before* unpickling
(by parsing the pickle opcodes, never executing them):

- globals torch already allows (tensors, storages, OrderedDict, ...) load as usual;
- globals that are code by nature (``os``, ``subprocess``, ``builtins.eval``, ``pickle``, ...; see
  `is_code_global`) refuse the file, naming the global;
- every other global is replaced by an inert stand-in: a fresh `StandIn` subclass registered with
  ``torch.serialization.safe_globals`` under the global's qualified name.  Constructing it (REDUCE),
  creating it (NEWOBJ) or setting its state (BUILD) records the arguments and does nothing else, so
  the foreign module is never imported and none of its code runs.

Afterwards numpy scalars, dtypes and plain (non-object) arrays are rebuilt from their recorded bytes
(`materialise`): that is reading data, not running the file's code.
"""

from __future__ import annotations

import io
import math
import pickletools
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch._utils import IMPORT_MAPPING, NAME_MAPPING

# Whole modules whose globals execute, import, or touch the system.  Anything under them is refused.
CODE_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "importlib", "runpy", "shutil",
        "socket", "pickle", "_pickle", "cPickle", "copyreg", "copy_reg", "marshal", "ctypes", "_ctypes",
        "code", "codeop", "pty", "commands", "platform", "webbrowser", "multiprocessing", "threading",
        "_thread", "asyncio", "signal", "pdb", "bdb", "timeit", "types", "operator", "_operator",
        "functools", "_functools", "io", "_io", "tempfile", "glob", "inspect", "builtins", "__builtin__",
        "_posixsubprocess", "_winapi", "msvcrt", "winreg", "http", "urllib", "ftplib", "smtplib",
        "telnetlib", "zipimport", "pkgutil", "site", "sysconfig", "distutils", "setuptools", "pip",
        "dill", "cloudpickle", "joblib", "torch.hub", "torch.jit", "torch.package", "torch._C",
        "torch.ops", "torch._ops", "torch.serialization", "torch.utils.cpp_extension", "numpy.f2py",
        "numpy.distutils", "numpy.testing", "numpy.lib.format", "numpy.load", "numpy.save",
    }
)
# Harmless builtins a pickle may legitimately name (data constructors); every other builtin is refused.
# (They still load as stand-ins: naming them does not make them run.)
SAFE_BUILTINS = frozenset(
    {f"builtins.{n}" for n in ("slice", "range", "frozenset", "object", "int", "float", "str", "bool", "dict", "list",
                               "tuple", "bytes")}
    | {"types.SimpleNamespace"}
)


def is_code_global(name: str) -> bool:
    """True when the global ``module.qualname`` is code by nature and so refuses the file."""
    if name in SAFE_BUILTINS:
        return False
    module = name.rsplit(".", 1)[0] if "." in name else name
    parts = module.split(".")
    prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))} | {name}
    if prefixes & CODE_MODULES:
        return True
    leaf = name.rsplit(".", 1)[-1]
    # eval/exec/getattr/__import__ re-exported elsewhere, and dunder machinery of any module
    return leaf in {"eval", "exec", "compile", "getattr", "setattr", "delattr", "__import__", "system", "popen",
                    "execfile", "spawn", "open", "load", "loads", "__reduce__", "__reduce_ex__", "__getattribute__"}


class UnsafeGlobalError(Exception):
    """The pickle names a global that is code by nature."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class StandIn:
    """An inert placeholder for a foreign global: records how it was built, does nothing else.

    Subclasses are made per global by `stand_in_for`; ``qualified_name`` says which global.
    """

    qualified_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        inst = object.__new__(cls)
        object.__setattr__(inst, "args", args)
        object.__setattr__(inst, "kwargs", kwargs)
        object.__setattr__(inst, "state", None)
        return inst

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the arguments are already recorded
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "state", state)

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name}>"

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly description (for reports); never the recorded objects themselves."""
        out: dict[str, Any] = {"stand_in": self.qualified_name}
        if isinstance(self.state, dict):
            out["state_keys"] = sorted(str(k) for k in self.state)[:50]
        return out


# dict subclasses pickled with their items (SETITEMS), which torch's unpickler only applies to a real
# dict: these globals load as plain dicts (the items kept, the class and its code dropped).
DICT_LIKE = frozenset({
    "collections.defaultdict",
    "addict.addict.Dict",
    "mmengine.config.config.ConfigDict",
    "mmcv.utils.config.ConfigDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
})


class _PlainDict:
    """Stand-in for a dict subclass: creating or calling it gives an empty plain dict, whatever the
    arguments (a defaultdict's factory is dropped), which the pickle's items then fill."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:  # type: ignore[misc]
        return {}


def stand_in_for(name: str) -> type:
    """A fresh `StandIn` subclass for the global ``name`` (one class per global, so each instance knows it)."""
    leaf = name.rsplit(".", 1)[-1]
    if name in DICT_LIKE:
        return type(f"PlainDict_{leaf}", (_PlainDict,), {"qualified_name": name, "__module__": __name__})
    return type(f"StandIn_{leaf}", (StandIn,), {"qualified_name": name, "__module__": __name__})


@dataclass
class UntrustedLoad:
    """What was unpickled, and which globals were replaced by stand-ins."""

    payload: Any
    stand_ins: list[str] = field(default_factory=list)


def _mapped(module: str, name: str) -> str:
    """The name torch's unpickler will look up (Python 2 names mapped as it maps them)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def python3_name(name: str) -> str:
    """What Python 3's pickle would import for a (possibly Python 2) global name: protocol-2 pickles
    written by Python 3 store e.g. ``subprocess.call`` as ``commands.call``."""
    import _compat_pickle

    module, _, leaf = name.rpartition(".")
    if (module, leaf) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, leaf)])
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{leaf}"


def _globals_in_pickle_stream(stream: io.BufferedIOBase, max_pickles: int) -> set[str]:
    """GLOBAL names in up to ``max_pickles`` consecutive pickles (legacy torch files hold several);
    parsing stops quietly at the first bytes that are not a pickle (the raw storages that follow)."""
    found: set[str] = set()
    for _ in range(max_pickles):
        start = stream.tell()
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    module, _, name = arg.partition(" ")
                    found.add(_mapped(module, name))
        except Exception:  # not (or no longer) a pickle: storages, or damaged bytes torch will report
            break
        if stream.tell() == start:
            break
    return found


def globals_in_checkpoint(path: Path) -> set[str]:
    """Every global the file's pickle(s) name, found by parsing opcodes only."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(0)
        if head.startswith(b"PK"):
            try:
                with zipfile.ZipFile(handle) as archive:
                    names = [n for n in archive.namelist() if n.endswith(".pkl")]
                    found: set[str] = set()
                    for member in names:
                        with archive.open(member) as pkl:
                            found |= _globals_in_pickle_stream(io.BytesIO(pkl.read()), 1)
                    return found
            except zipfile.BadZipFile:
                return set()
        return _globals_in_pickle_stream(handle, 4)


def _allowed_by_torch() -> set[str]:
    from torch import _weights_only_unpickler as wou

    return set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())


def load_untrusted(path: Path) -> UntrustedLoad:
    """``torch.load(weights_only=True)`` with foreign globals replaced by stand-ins.

    Raises `UnsafeGlobalError` (before unpickling anything) when a global is code by nature;
    other failures are torch's own (`pickle.UnpicklingError` and friends).
    """
    names = globals_in_checkpoint(path)
    foreign = sorted(names - _allowed_by_torch())
    for name in foreign:
        python3 = python3_name(name)
        if is_code_global(name) or is_code_global(python3):
            raise UnsafeGlobalError(name if python3 == name else f"{name} (Python 2's name of {python3})")
    pairs = [(stand_in_for(name), name) for name in foreign]
    # torch warns about how an old or odd file is stored (TypedStorage, pickle protocols, quantized
    # dtypes): its own internals, not the user's concern; what matters is reported by the readers.
    with warnings.catch_warnings(), torch.serialization.safe_globals(pairs):
        warnings.simplefilter("ignore", UserWarning)
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    return UntrustedLoad(materialise(payload), foreign)


# ---- numpy values rebuilt from their recorded bytes --------------------------------------------------

_NUMPY_SCALAR = {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"}
_NUMPY_RECONSTRUCT = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}
_PLAIN_KINDS = set("biufcSUmM?")


def _numpy_dtype(obj: Any) -> np.dtype | None:
    """np.dtype from a stand-in of ``numpy.dtype`` (or a numpy 2 ``numpy.dtypes.*DType``) with a plain type string."""
    if isinstance(obj, np.dtype):
        return obj
    if not isinstance(obj, StandIn) or obj.qualified_name != "numpy.dtype" or not obj.args:
        return None
    code = obj.args[0]
    if not isinstance(code, str) or len(code) > 8:
        return None
    try:
        dtype = np.dtype(code)
    except TypeError:
        return None
    if dtype.kind not in _PLAIN_KINDS or dtype.hasobject:
        return None
    state = obj.state
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">") and dtype.itemsize > 1:
        dtype = dtype.newbyteorder(state[1])
    return dtype


def _numpy_value(obj: StandIn) -> Any:
    """A numpy scalar or array rebuilt from a stand-in, or the stand-in itself when it is not plain data
    (or when the recorded arguments do not make sense: the file is untrusted)."""
    try:
        return _numpy_value_unchecked(obj)
    except (TypeError, ValueError, OverflowError, MemoryError):
        return obj


def _numpy_value_unchecked(obj: StandIn) -> Any:
    name = obj.qualified_name
    if name in _NUMPY_SCALAR and len(obj.args) == 2 and isinstance(obj.args[1], (bytes, bytearray)):
        dtype = _numpy_dtype(obj.args[0])
        if dtype is not None and len(obj.args[1]) == dtype.itemsize:
            return np.frombuffer(bytes(obj.args[1]), dtype=dtype)[0]
    if name in _NUMPY_RECONSTRUCT and isinstance(obj.state, tuple) and len(obj.state) == 5:
        _version, shape, dtype_obj, fortran, raw = obj.state
        dtype = _numpy_dtype(dtype_obj)
        if (dtype is not None and isinstance(raw, (bytes, bytearray)) and isinstance(shape, tuple)
                and all(type(n) is int and n >= 0 for n in shape)):
            count = math.prod(shape)
            if count * dtype.itemsize == len(raw):
                return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()
    if name == "numpy.dtype":
        dtype = _numpy_dtype(obj)
        if dtype is not None:
            return dtype
    return obj


def materialise(obj: Any, _depth: int = 0) -> Any:
    """Replace numpy stand-ins by real numpy values throughout containers and stand-in state."""
    if _depth > 64:
        return obj
    if isinstance(obj, StandIn):
        object.__setattr__(obj, "args", tuple(materialise(a, _depth + 1) for a in obj.args))
        object.__setattr__(obj, "state", materialise(obj.state, _depth + 1))
        return _numpy_value(obj)
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = materialise(obj[key], _depth + 1)
        return obj
    if isinstance(obj, list):
        obj[:] = [materialise(v, _depth + 1) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(materialise(v, _depth + 1) for v in obj)
    return obj
