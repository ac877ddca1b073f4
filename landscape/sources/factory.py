"""``--model-factory``: the callable named by ``package.module:callable``, and the module it
builds. It imports and runs the user's own code on their own machine, like any Python program;
it is never offered to the service. Apart from ``modules`` so that ``checkpoint`` can rebuild a
factory's checkpoint without importing what imports it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from landscape.errors import SpecError


def load_factory(
    spec: str, *, option: str = "--model-factory", returns: str = "an nn.Module"
) -> Callable[..., Any]:
    """The callable named by ``package.module:attribute[.attribute…]`` (imports the module).

    ``option`` and ``returns`` name the flag and what its callable gives in the messages, so
    ``--loss-factory`` (``landscape.losses``) resolves by the same rules and reads the same."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name.strip() or not attr_path.strip() or ":" in attr_path:
        raise SpecError(
            f"{option} wants 'package.module:callable', got {spec!r} "
            "(for example 'my_project.nets:make_net')"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SpecError(
            f"{option} {spec!r}: cannot import module {module_name!r} ({exc}); "
            "is it installed, or on PYTHONPATH?"
        ) from exc
    except Exception as exc:  # the user's module raised while being imported
        raise SpecError(
            f"{option} {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise SpecError(f"{option} {spec!r}: {module_name!r} has no attribute {part!r}")
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(
            f"{option} {spec!r} names a {type(target).__name__}, not a callable "
            f"that returns {returns}"
        )
    factory: Callable[..., Any] = target  # callable, checked above
    return factory


def build_from_factory(factory: Callable[..., nn.Module], spec: str, **kwargs: Any) -> nn.Module:
    """Call the factory with ``kwargs``; a bad argument or a non-module result is a SpecError."""
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise SpecError(f"--model-factory {spec!r} rejected its arguments: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise SpecError(
            f"--model-factory {spec!r} returned a {type(model).__name__}, not an nn.Module"
        )
    return model
