"""What a surface is computed from: a module, the tensors it is evaluated on, and their identity.

``compute_surface`` runs one loop for every source; only how the module and the data arrive
differs:

- ``checkpoint_source``: a checkpoint file named by ``SurfaceSpec.checkpoint`` and a data set
  named by ``SurfaceSpec.data``. A landscape (zoo or plugin) checkpoint rebuilds its own model;
  an ``.onnx`` file is converted and checked by ``sources.onnx_import`` (no user code runs);
  ``factory=`` builds the architecture with the user's own code (``sources.modules``) and
  loads a bare state_dict into it. The key is the file's sha256, or ``model_key`` for a factory
  (the file holds only weights: the architecture is part of the identity).
- ``module_source``: an ``nn.Module`` and tensors from Python; the key is ``model_key``.

Modules that did not come from the zoo go through ``plan_engine``: what the engine cannot do
with them (fold BN, batch grid points) is done the exact generic way, one line per fallback.
Regression targets (floating point) always take the generic per-point path
(``landscape.engine.regression``): the engine computes classification losses only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.engine.fx_trace import symbolic_trace
from landscape.errors import SpecError
from landscape.specs import EngineOptions, SurfaceSpec

if TYPE_CHECKING:
    from landscape.sources.onnx_limits import OnnxLimits

Task = Literal["classification", "regression"]
Data = Mapping[str, tuple[Tensor, Tensor]]

REGRESSION_LOSS = "mean over samples of the mean squared error over outputs; acc holds R²"


@dataclass
class ModelSource:
    """A module ready to evaluate, its data, and what identifies them in a surface file."""

    model: nn.Module
    data: dict[str, tuple[Tensor, Tensor]]
    key: str  # where a checkpoint's sha256 stands in the surface key
    provenance: dict[str, Any]  # the model's root attrs (``checkpoint_sha256`` among them)
    task: Task = "classification"
    known_architecture: bool = True  # a zoo/plugin model: the engine handles it as it is
    engine_fallbacks: list[str] = field(default_factory=list)

    def plan_engine(self, options: EngineOptions) -> EngineOptions:
        """Options the engine can run this module with (fallbacks recorded on ``self``)."""
        if self.known_architecture or self.task == "regression":
            return options
        options, self.engine_fallbacks = plan_engine(self.model, self.data, options)
        return options


def checkpoint_source(
    spec: SurfaceSpec,
    *,
    factory: str | None = None,
    factory_args: Mapping[str, Any] | None = None,
    onnx_limits: OnnxLimits | None = None,
) -> ModelSource:
    """The source a spec names: its checkpoint file (see the module docstring) and data set."""
    from landscape.data import dataset_info, load_data
    from landscape.sources.checkpoint import file_digest, load_checkpoint

    path = Path(spec.checkpoint)
    if not path.is_file():  # first: it names a bad path before any data loads
        load_checkpoint(path)  # raises the usual CheckpointError naming the path
    data: dict[str, tuple[Tensor, Tensor]] = {
        split: load_data(spec.data, split) for split in spec.splits
    }
    digest = file_digest(path)
    if factory is not None:
        from landscape.sources.modules import load_factory_checkpoint

        info = dataset_info(spec.data.name, spec.data.data_root)
        shape = info.model_shape()
        model, meta = load_factory_checkpoint(path, factory, {**shape, **dict(factory_args or {})})
        provenance = {
            "model": meta["model"],
            "model_args": meta["model_args"],
            "model_source": "factory",
            "model_factory": factory,
            "checkpoint_file_sha256": digest,
            **_module_identity(model, meta["model_key"]),
        }
        source = ModelSource(model, data, meta["model_key"], provenance, known_architecture=False)
    elif path.suffix.lower() == ".onnx":
        from landscape.sources.onnx_import import load_onnx_model

        x = next(iter(data.values()))[0]
        model, report = load_onnx_model(
            path, sample_input_shape=tuple(x.shape[1:]), limits=onnx_limits
        )
        provenance = {
            "model": "onnx",
            "model_args": {},
            "model_source": "onnx",
            "checkpoint_sha256": digest,
            "onnx": report,
        }
        source = ModelSource(model, data, digest, provenance, known_architecture=False)
    else:
        model, meta = load_checkpoint(path)
        from landscape.storage.summary import FINAL_FIELDS

        provenance = {
            "model": str(meta.get("model", "unknown")),
            "model_args": dict(meta.get("model_args", {})),
            "checkpoint_sha256": digest,
            "train_recipe": meta.get("train_spec"),
            "train_final": {k: meta[k] for k in FINAL_FIELDS if k in meta} or None,
        }
        source = ModelSource(model, data, digest, provenance)
    source.task = infer_task(data)
    check_fits(source.model, data, source.task)
    return source


def module_source(
    model: nn.Module,
    data: Data,
    *,
    label: str | None = None,
    extra_provenance: Mapping[str, Any] | None = None,
) -> ModelSource:
    """A module object and tensors (split name → ``(x, y)``) from Python."""
    from landscape.sources.modules import model_key

    tensors = {s: (x.detach().cpu(), y.detach().cpu()) for s, (x, y) in data.items()}
    task = infer_task(tensors)
    key = model_key(model)  # before any forward pass
    check_fits(model, tensors, task)
    provenance = {
        "model": label or type(model).__name__,
        "model_args": {},
        "model_source": "python",
        **_module_identity(model, key),
        **dict(extra_provenance or {}),
    }
    return ModelSource(model, tensors, key, provenance, task, known_architecture=False)


def _module_identity(model: nn.Module, key: str) -> dict[str, Any]:
    from landscape.sources.modules import module_description, weights_digest

    description = module_description(model)
    return {
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "checkpoint_sha256": key,
        "weights_sha256": weights_digest(model),
        "model_description_sha256": hashlib.sha256(description.encode()).hexdigest(),
        "model_description_kind": "torch.fx" if "graph (torch.fx):" in description else "source",
    }


def infer_task(data: Data) -> Task:
    """Integer targets are class labels; floating targets are regression targets."""
    kinds = {"regression" if y.is_floating_point() else "classification" for _, y in data.values()}
    if len(kinds) != 1:
        raise SpecError("all splits need targets of one kind: class labels or real values")
    return "regression" if kinds == {"regression"} else "classification"


def check_fits(model: nn.Module, data: Data, task: Task) -> None:
    """One forward pass on a copy (BN in train mode would change the model), so a model/data
    mismatch is a clear error up front rather than a shape error deep inside the engine."""
    x, y = next(iter(data.values()))
    probe = copy.deepcopy(model).cpu().eval()
    try:
        with torch.inference_mode():
            out = probe(x[:2].float())
    except Exception as exc:
        raise SpecError(
            f"the model does not accept inputs of shape {tuple(x.shape[1:])}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(out, Tensor):
        raise SpecError(f"the model returns a {type(out).__name__}; a surface needs one tensor")
    if task == "classification":
        n_classes = int(y.max()) + 1 if len(y) else 0
        if out.dim() != 2 or out.shape[1] < n_classes:
            raise SpecError(
                f"the model outputs {tuple(out.shape[1:])} per sample; class labels up to "
                f"{n_classes - 1} need logits of shape (batch, >= {n_classes})"
            )
    elif out[0].numel() != y[0].numel():
        raise SpecError(
            f"the model outputs {tuple(out.shape[1:])} per sample but the targets are "
            f"{tuple(y.shape[1:])}"
        )


def plan_engine(
    model: nn.Module, data: Data, options: EngineOptions
) -> tuple[EngineOptions, list[str]]:
    """Options the engine can run this module with, and a line per exact fallback taken."""
    from landscape.engine.devices import resolve_device

    fallbacks: list[str] = []
    name = type(model).__name__
    try:
        symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            fallbacks.append(
                f"BN not folded: torch.fx cannot trace {name} ({type(exc).__name__}); "
                "BN runs as its own layer"
            )
    batching = options.points_per_call != 1 and (
        options.points_per_call is not None or resolve_device(options.device).type == "cuda"
    )
    if batching and (reason := _vmap_failure(model, data)) is not None:
        options = dataclasses.replace(options, points_per_call=1)
        fallbacks.append(f"one grid point per call: torch.vmap cannot batch {name} ({reason})")
    return options, fallbacks


def _vmap_failure(model: nn.Module, data: Data) -> str | None:
    """Why ``torch.vmap`` over the weights fails for this module (None when it works)."""
    probe = copy.deepcopy(model).cpu().eval()
    x = next(iter(data.values()))[0][:2].float()
    params = {n: torch.stack([p.detach()] * 2) for n, p in probe.named_parameters()}
    try:
        with torch.inference_mode():
            torch.vmap(lambda p: functional_call(probe, p, (x,)))(params)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None
