"""The model zoo: builders registered by name, so specs, checkpoints and the API name models.

A builder takes the data set's shape (``in_channels``, ``num_classes``, ``image_size``) plus
model-specific keyword arguments; ``build`` records the name and every argument on the module
(``landscape_model``) so a checkpoint can rebuild exactly the same network. Installed packages
add builders through the ``landscape.models`` entry-point group (``landscape.models.plugins``);
they are loaded on the first lookup and then listed and built like the zoo's own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from landscape.errors import SpecError, UnknownNameError

# A builder is called as ``builder(*, in_channels, num_classes, image_size, **model_args)``;
# each declares its own model-specific keywords, so the registry can only say ``...``.
Builder = Callable[..., nn.Module]
_BuilderT = TypeVar("_BuilderT", bound=Builder)


@dataclass(frozen=True)
class ModelInfo:
    """One line of the zoo listing (used by ``GET /api/models``)."""

    name: str
    description: str
    source: str = "zoo"  # or "plugin <distribution> <version>"


_REGISTRY: dict[str, tuple[Builder, str]] = {}
_SOURCES: dict[str, str] = {}  # plugin models only
_plugins_lock = threading.RLock()  # re-entrant: a plugin may look the zoo up while imported
_plugins_state = "pending"  # → "loading" → "done"


def _load_plugins() -> None:
    """Register the installed plugins' models, once (the zoo's names win any clash)."""
    global _plugins_state
    if _plugins_state == "done":
        return
    with _plugins_lock:
        if _plugins_state != "pending":  # done by another thread, or this one is loading them
            return
        _plugins_state = "loading"
        try:
            from landscape.models.plugins import discover

            for plugin in discover(taken=_REGISTRY):
                _REGISTRY[plugin.name] = (plugin.builder, plugin.description)
                _SOURCES[plugin.name] = plugin.source
        finally:
            _plugins_state = "done"


def register_model(name: str, description: str) -> Callable[[_BuilderT], _BuilderT]:
    """Register a builder under ``name``; a second registration of a name is a bug, so it raises."""

    def decorator(builder: _BuilderT) -> _BuilderT:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = (builder, description)
        return builder

    return decorator


def build(
    name: str, *, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **kwargs: Any
) -> nn.Module:
    """Build a registered model; the construction arguments are kept in ``landscape_model``."""
    _load_plugins()
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, sorted(_REGISTRY))
    for key, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise SpecError(f"{key} must be a positive integer, got {value!r}")
    builder, _ = _REGISTRY[name]
    try:
        model = builder(
            in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs
        )
    except TypeError as exc:  # an unknown keyword argument for this model
        raise SpecError(f"bad arguments for model {name!r}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(f"model {name!r}'s builder returned a {type(model).__name__}, not a Module")
    model.landscape_model = {  # type: ignore[assignment]  # Module.__setattr__ wants Tensor/Module
        "name": name,
        "args": {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "image_size": image_size,
            **kwargs,
        },
    }
    return model


def model_identity(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``(name, args)`` of a model made by ``build``; None for a foreign module."""
    record = getattr(model, "landscape_model", None)
    if not isinstance(record, dict):
        return None
    return str(record["name"]), dict(record["args"])


def list_models() -> list[ModelInfo]:
    """Every registered model (the zoo's and the installed plugins'), sorted by name."""
    _load_plugins()
    return [
        ModelInfo(name, _REGISTRY[name][1], _SOURCES.get(name, "zoo")) for name in sorted(_REGISTRY)
    ]


# Importing the families registers them.
from landscape.models import densenet, mlp, resnet  # noqa: E402

__all__ = [
    "ModelInfo",
    "build",
    "densenet",
    "list_models",
    "mlp",
    "model_identity",
    "register_model",
    "resnet",
]
