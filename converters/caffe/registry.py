"""A registry of one small named function per (framework, Caffe layer type).

Used twice, on purpose separately: the mapping (layers.py, key ``"caffe"``) and the independent
interpreter (interpreter.py, key ``"caffe-interpreter"``).  A duplicate registration raises; an
unknown type raises an error naming the type and the layer.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from resnet_port.errors import ConversionError

F = TypeVar("F", bound=Callable)
_REGISTRY: dict[tuple[str, str], Callable] = {}


def register(framework: str, layer_type: str) -> Callable[[F], F]:
    def decorator(fn: F) -> F:
        key = (framework, layer_type)
        if key in _REGISTRY:
            raise RuntimeError(f"{framework} layer type {layer_type!r} is registered twice ({_REGISTRY[key].__name__}, {fn.__name__})")
        _REGISTRY[key] = fn
        return fn

    return decorator


def lookup(framework: str, layer_type: str, layer_name: str, where: str) -> Callable:
    try:
        return _REGISTRY[(framework, layer_type)]
    except KeyError:
        known = sorted(t for f, t in _REGISTRY if f == framework)
        raise ConversionError(
            f"{where}: layer {layer_name!r} has type {layer_type!r}, which {framework} does not handle "
            f"(known: {', '.join(known)})"
        ) from None


def registered_types(framework: str) -> list[str]:
    return sorted(t for f, t in _REGISTRY if f == framework)


__all__ = ["lookup", "register", "registered_types"]
