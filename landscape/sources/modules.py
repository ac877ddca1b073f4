"""Your own model: the identity of any ``nn.Module``, and architectures from your own code.

A surface is cached by what determines its numbers. For a zoo checkpoint that is the file's
bytes; for a module object handed over from Python there is no file, so the key is made of two
halves:

- ``weights_digest``: sha256 over the ``state_dict`` (parameters *and* buffers, e.g. BN
  running statistics) in name order — every number the forward pass reads;
- ``module_description``: what the forward pass does with them. When ``torch.fx`` can trace
  the module this is the traced graph's code (the sequence of operations, control flow
  resolved) plus the module tree's ``repr`` (layer hyper-parameters the graph refers to by
  name: stride, padding, eps…). A repr alone is not enough: two modules with the same layers
  can combine them differently in ``forward``. When tracing fails (data-dependent control
  flow), the class's ``forward`` source stands in for the graph. Names and shapes of every
  tensor are included in both cases.

``load_factory_checkpoint`` loads weights into a ``--model-factory`` module, which
``landscape.sources.factory`` resolves from ``package.module:callable``: it imports and runs
the user's own code on their own machine, like any Python program. It is never offered to
the service, whose uploads go through ``landscape.sources.onnx_import`` instead.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.engine.fx_trace import symbolic_trace
from landscape.errors import CheckpointError
from landscape.sources.factory import build_from_factory, load_factory

FACTORY_HELP = (
    "build the architecture with your own code: 'package.module:callable', imported and run "
    "in this process like any Python program you start yourself (name only code you trust); the "
    "callable gets the data set's in_channels, num_classes and image_size as keywords, plus "
    "--model-args, and returns an nn.Module the checkpoint's state_dict is loaded into"
)


# --------------------------------------------------------------------------- identity


def weights_digest(model: nn.Module) -> str:
    """sha256 over every ``state_dict`` entry in name order: name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def module_description(model: nn.Module) -> str:
    """A stable text of the architecture (no weights, no memory addresses); see module doc."""
    kind = type(model)
    lines = [f"class {kind.__module__}.{kind.__qualname__}"]
    try:
        traced = symbolic_trace(copy.deepcopy(model))
        lines += ["graph (torch.fx):", traced.code.strip()]
    except Exception as exc:
        lines += [f"untraceable by torch.fx ({type(exc).__name__}); forward source:"]
        lines.append(_forward_source(kind))
    lines += ["modules:", repr(model)]
    lines += ["tensors:"] + [
        f"{name} {tuple(t.shape)} {t.dtype}" for name, t in model.state_dict().items()
    ]
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # what directions of ``params: trainable`` move depends on it
        lines += ["frozen (requires_grad False):", *frozen]
    return "\n".join(lines)


def _forward_source(kind: type) -> str:
    """Source of ``forward`` along the MRO (one notebook class may override another's)."""
    parts = []
    for base in kind.__mro__:
        if base is nn.Module or "forward" not in vars(base):
            continue
        try:
            parts.append(inspect.getsource(vars(base)["forward"]))
        except (OSError, TypeError):
            parts.append(f"<source of {base.__qualname__}.forward not available>")
    return "\n".join(parts) or "<no forward>"


def model_key(model: nn.Module) -> str:
    """The model's half of a surface's cache key: sha256 of the description and weights."""
    description = hashlib.sha256(module_description(model).encode()).hexdigest()
    return hashlib.sha256(f"{description}:{weights_digest(model)}".encode()).hexdigest()


def data_digest(data: Mapping[str, tuple[Tensor, Tensor]]) -> str:
    """sha256 over each split's inputs and targets (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for split in sorted(data):
        for part, tensor in zip(("x", "y"), data[split], strict=True):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{split}.{part}|{t.dtype}|{tuple(t.shape)}\n".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- --model-factory


def load_factory_checkpoint(
    path: str | Path, spec: str, factory_args: Mapping[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the factory's model and load a checkpoint's weights into it (never unpickled).

    The checkpoint is a landscape checkpoint (its ``state_dict`` is used) or a bare one.
    Returns the model in eval mode and metadata naming the factory and the weights' digest.
    """
    from landscape.sources.checkpoint import read_checkpoint_file

    model = build_from_factory(load_factory(spec), spec, **dict(factory_args or {}))
    content = read_checkpoint_file(path)
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if isinstance(state, dict) and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}  # DataParallel prefix
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise CheckpointError(
            f"{path} does not fit the model of --model-factory {spec!r}: "
            f"{' '.join(line.strip() for line in first[:3])}"
        ) from exc
    model.eval()
    meta = {
        "model": f"factory {spec}",
        "model_args": dict(factory_args or {}),
        "model_factory": spec,
        "model_key": model_key(model),
    }
    return model, meta
