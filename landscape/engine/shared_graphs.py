"""Compiled per-batch functions shared by every evaluator of the same architecture in a
process, keyed by a structural signature, a bounded number of architectures at a time.

Why: a BN-folded (or densified) model is a ``torch.fx.GraphModule``, and torch.fx makes a new
class for each one. dynamo guards on the module's class, so every new surface of the very same
network re-traced the engine's function and added a graph to its code object; after dynamo's
recompile budget (~32 two-split surfaces) a long-lived worker ran eager for the rest of its
life. Here a GraphModule whose signature — generated code, submodules, parameter and buffer
shapes, dtypes and devices, the data's batch shapes, precision, loss — matches an earlier
one's takes that one's class (same generated ``forward``, so the same guards hold), and each
signature gets its own copy of the per-batch function's code object: its own dynamo cache
entries and recompile budget, dropped with it when the least recently used signature is
evicted. Weights and buffers always reach the compiled code as inputs (``functional_call``,
and dynamo lifts module tensors), so new weights never recompile.
"""

from __future__ import annotations

import hashlib
import threading
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, fx, nn

MAX_ARCHITECTURES = 8  # signatures whose compiled functions and classes a process keeps

Fn = Callable[..., Any]


class _Entry:
    """What one signature keeps: the GraphModule class its modules share, and the compiled
    form of each per-batch function."""

    def __init__(self) -> None:
        self.cls: type | None = None
        self.fns: dict[Fn, Fn] = {}


_lock = threading.Lock()
_entries: OrderedDict[str, _Entry] = OrderedDict()


def _tensor_sig(name: str, t: Tensor) -> str:
    return f"{name}:{tuple(t.shape)}:{tuple(t.stride())}:{t.dtype}:{t.device}"


def graph_key(
    module: nn.Module,
    tensors: Mapping[str, Tensor],
    batches: Iterable[Tensor],
    extra: Iterable[object] = (),
) -> str:
    """The structural signature of evaluating ``module`` with ``tensors`` (parameters by
    name) on ``batches`` (one input per split): equal signatures mean the same compiled
    graph serves both. ``extra``: anything else the graph depends on (precision, loss)."""
    parts: list[str] = [type(module).__qualname__]
    if isinstance(module, fx.GraphModule):
        parts.append(module.code)
        forward_globals = type(module).forward.__globals__
        parts += [f"{k}={id(v)}" for k, v in sorted(forward_globals.items()) if k[:2] != "__"]
    for name, sub in module.named_modules():
        parts.append(f"{name}:{type(sub).__module__}.{type(sub).__qualname__}({sub.extra_repr()})")
    parts += [_tensor_sig(n, t) for n, t in sorted(tensors.items())]
    parts += [_tensor_sig(n, t) for n, t in module.named_buffers()]
    parts += [_tensor_sig("batch", x) for x in batches]
    parts += [repr(e) for e in extra]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _entry(key: str) -> _Entry:
    """The signature's entry, now the most recently used; the least recently used beyond
    ``MAX_ARCHITECTURES`` is dropped (with it its compiled functions). Hold ``_lock``."""
    entry = _entries.pop(key, None) or _Entry()
    _entries[key] = entry
    while len(_entries) > MAX_ARCHITECTURES:
        _entries.popitem(last=False)
    return entry


def share_class(module: nn.Module, key: str) -> nn.Module:
    """``module`` with the class of the first GraphModule seen with signature ``key`` (it is
    that class for the first). Only GraphModules change: other modules' classes are already
    shared. The module must not be ``recompile()``d afterwards: that would rewrite the
    shared class's ``forward``."""
    if not isinstance(module, fx.GraphModule):
        return module
    with _lock:
        entry = _entry(key)
        if entry.cls is None:
            entry.cls = type(module)
        elif entry.cls is not type(module) and entry.cls.__bases__ == type(module).__bases__:
            module.__class__ = entry.cls
    return module


def compiled_for(key: str, fn: Fn) -> Fn:
    """The compiled form of ``fn`` for signature ``key``: compiled from a copy of ``fn``'s
    code object, whose dynamo cache and recompile budget belong to this signature alone."""
    with _lock:
        entry = _entry(key)
        out = entry.fns.get(fn)
        if out is None:
            code = fn.__code__.replace()  # a new code object: dynamo keys its cache on it
            copy = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__)
            copy.__kwdefaults__, copy.__qualname__ = fn.__kwdefaults__, fn.__qualname__
            out = entry.fns[fn] = torch.compile(copy, dynamic=False)
        return out


def has_compiled(key: str) -> bool:
    """Whether a compiled function for signature ``key`` exists in this process."""
    with _lock:
        entry = _entries.get(key)
        return entry is not None and bool(entry.fns)


def cached_architectures() -> int:
    """How many signatures this process keeps compiled functions for (at most
    ``MAX_ARCHITECTURES``)."""
    with _lock:
        return sum(1 for e in _entries.values() if e.fns)
