"""The model registry: builders by name, their declared arguments and data, and ``build``.

Its own module, apart from the package that imports every family, so each family registers
itself by importing this and never the package that imports it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
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
    spatial_dims: tuple[int, ...] = (2,)  # the data it takes: 2 images, 1 signals


# Inclusive bounds of a numeric model argument, e.g. ``(1, 1024)`` for a width.
ArgRange = tuple[int, int] | tuple[float, float]

_REGISTRY: dict[str, tuple[Builder, str]] = {}
_SOURCES: dict[str, str] = {}  # plugin models only
_ARG_RANGES: dict[str, dict[str, ArgRange]] = {}  # declared by register_model, else none
_SPATIAL_DIMS: dict[str, tuple[int, ...]] = {}  # declared by register_model; plugins: images

# The data set's shape: given to every builder by ``build``, never a model argument
# (``spatial_dims`` only to a builder that names it: one that takes both images and signals).
SHAPE_KEYS = ("in_channels", "num_classes", "image_size", "spatial_dims")
IMAGE_DIMS = 2  # the default: a model or data set that declares nothing holds images
# Arguments of a model that declares no range: enough for any sane width or depth, far too
# little for a request to make the process allocate unbounded memory in one call.
GENERIC_INT_BOUND = 1 << 16
GENERIC_FLOAT_BOUND = 1e6
GENERIC_STR_CHARS = 100
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


def register_model(
    name: str,
    description: str,
    *,
    arg_ranges: Mapping[str, ArgRange] | None = None,
    spatial_dims: tuple[int, ...] = (IMAGE_DIMS,),
) -> Callable[[_BuilderT], _BuilderT]:
    """Register a builder under ``name``; a second registration of a name is a bug, so it raises.

    ``arg_ranges`` bounds the builder's numeric keyword arguments (inclusive), checked by
    ``check_model_args`` before anything is built; arguments without a declared range get the
    generic bounds. A range for a keyword the builder does not take is a bug, so it raises.
    ``spatial_dims`` lists the data the model takes (2: ``(C, S, S)`` images, 1: ``(C, S)``
    signals); a builder declaring several must take ``spatial_dims`` to know which it got.
    """

    def decorator(builder: _BuilderT) -> _BuilderT:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        ranges = dict(arg_ranges or {})
        keywords = _keywords(builder)
        stray = [] if keywords is None else sorted(set(ranges) - set(keywords))
        if stray:
            raise ValueError(f"model {name!r} declares ranges for arguments it lacks: {stray}")
        if not spatial_dims or not set(spatial_dims) <= {1, 2}:
            raise ValueError(f"model {name!r}: spatial_dims must be 1 and/or 2, got {spatial_dims}")
        if len(spatial_dims) > 1 and not _takes_dims(builder):
            raise ValueError(f"model {name!r} takes {spatial_dims}-D data but no spatial_dims")
        _REGISTRY[name] = (builder, description)
        _ARG_RANGES[name] = ranges
        _SPATIAL_DIMS[name] = tuple(sorted(spatial_dims))
        return builder

    return decorator


def _keywords(builder: Builder) -> dict[str, inspect.Parameter] | None:
    """The builder's own keyword parameters (the data set's shape left out), or None when it
    takes ``**kwargs`` and so names no fixed set."""
    parameters = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.name not in SHAPE_KEYS
    }


def _takes_dims(builder: Builder) -> bool:
    return "spatial_dims" in inspect.signature(builder).parameters


def model_spatial_dims(name: str) -> tuple[int, ...]:
    """The data a model takes: ``(2,)`` images, ``(1,)`` signals, ``(1, 2)`` either."""
    _load_plugins()
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, sorted(_REGISTRY))
    return _SPATIAL_DIMS.get(name, (IMAGE_DIMS,))


_DIMS_WORDS = {1: "1-D signals", 2: "2-D images"}


def _check_dims(name: str, spatial_dims: int) -> None:
    accepted = model_spatial_dims(name)
    if spatial_dims in accepted:
        return
    fits = [n for n in sorted(_REGISTRY) if spatial_dims in _SPATIAL_DIMS.get(n, (IMAGE_DIMS,))]
    raise SpecError(
        f"model {name!r} takes {' or '.join(_DIMS_WORDS[d] for d in accepted)}, and this data "
        f"set holds {_DIMS_WORDS.get(spatial_dims, f'{spatial_dims}-D data')}; models for it: "
        f"{', '.join(fits) or 'none'}"
    )


def check_model_args(name: str, args: Mapping[str, Any]) -> None:
    """Refuse (``SpecError``) arguments ``build(name, **args)`` must not get: keys the builder
    does not take (the message lists those it does), the data set's shape, values of another
    type than the builder's default, and numbers outside the model's declared range (or, with
    none declared, the generic bounds). Cheap and allocation-free, so the API checks a request
    with it before queueing and ``build`` before constructing anything."""
    _load_plugins()
    if name not in _REGISTRY:
        raise UnknownNameError("model", name, sorted(_REGISTRY))
    keywords = _keywords(_REGISTRY[name][0])
    ranges = _ARG_RANGES.get(name, {})
    for key, value in args.items():
        if key in SHAPE_KEYS:
            raise SpecError(f"{key} is set by the data set, not a model argument of {name!r}")
        if keywords is not None and key not in keywords:
            valid = ", ".join(sorted(keywords)) or "none"
            raise SpecError(f"model {name!r} takes no argument {key!r}; its arguments: {valid}")
        default = keywords[key].default if keywords is not None else inspect.Parameter.empty
        _check_value(name, key, value, default, ranges.get(key))


_KIND_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "number": "a number",
    "str": "a string",
    "any": "a number, a string or true/false",
}


def _expected_kind(default: Any, bounds: ArgRange | None) -> str:
    """What a value must be: a declared range makes it a number (an integer when both bounds
    are); otherwise the type of the builder's default says, and no default allows any scalar."""
    if bounds is not None:
        return "int" if all(isinstance(b, int) for b in bounds) else "number"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, str):
        return "str"
    return "any"


def _check_value(name: str, key: str, value: Any, default: Any, bounds: ArgRange | None) -> None:
    what = f"argument {key!r} of model {name!r}"
    kind = _expected_kind(default, bounds)
    if isinstance(value, bool):  # before int: a bool is an int to Python, never a width
        if kind not in ("bool", "any"):
            raise SpecError(f"{what} must be {_KIND_WORDS[kind]}, got {value!r}")
        return
    if isinstance(value, str):
        if kind not in ("str", "any"):
            raise SpecError(f"{what} must be {_KIND_WORDS[kind]}, got a string")
        if len(value) > GENERIC_STR_CHARS:
            raise SpecError(f"{what} must be at most {GENERIC_STR_CHARS} characters")
        return
    numeric = kind in ("number", "any") and isinstance(value, int | float)
    if numeric or (kind == "int" and isinstance(value, int)):
        integral = kind == "int" or (kind == "any" and isinstance(value, int))
        generic = GENERIC_INT_BOUND if integral else GENERIC_FLOAT_BOUND
        low, high = bounds or (-generic, generic)
        if not low <= value <= high:  # NaN compares false: refused too
            raise SpecError(f"{what} must be in [{low}, {high}], got {_shown(value)}")
        return
    shown = _shown(value) if isinstance(value, int | float) else type(value).__name__
    raise SpecError(f"{what} must be {_KIND_WORDS[kind]}, got {shown}")


def _shown(value: float) -> str:
    """A number for a message: an integer too long to print (or to echo) by its size."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)


def build(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    spatial_dims: int = IMAGE_DIMS,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; the construction arguments are kept in ``landscape_model``
    (``spatial_dims`` only for signals, so every image model's record stays as it was)."""
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
    _check_dims(name, spatial_dims)
    check_model_args(name, kwargs)
    builder, _ = _REGISTRY[name]
    shape = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size}
    dims = {"spatial_dims": spatial_dims}
    try:
        model = builder(**shape, **(dims if _takes_dims(builder) else {}), **kwargs)
    except TypeError as exc:  # an unknown keyword argument for this model
        raise SpecError(f"bad arguments for model {name!r}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(f"model {name!r}'s builder returned a {type(model).__name__}, not a Module")
    model.landscape_model = {  # type: ignore[assignment]  # Module.__setattr__ wants Tensor/Module
        "name": name,
        "args": {**shape, **(dims if spatial_dims != IMAGE_DIMS else {}), **kwargs},
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
        ModelInfo(
            name,
            _REGISTRY[name][1],
            _SOURCES.get(name, "zoo"),
            _SPATIAL_DIMS.get(name, (IMAGE_DIMS,)),
        )
        for name in sorted(_REGISTRY)
    ]
