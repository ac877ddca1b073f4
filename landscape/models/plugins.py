"""Architectures from installed packages: the ``landscape.models`` entry-point group.

A package registers a model by declaring, in its ``pyproject.toml``::

    [project.entry-points."landscape.models"]
    my-net = "my_package.models:build_my_net"

The entry point's name is the model name; its object is a builder with the zoo's signature,
``builder(*, in_channels, num_classes, image_size, **model_args) -> nn.Module``, whose
docstring's first line is the listing's description. Plugins are trusted code the operator
installed; they are imported once, on the first lookup. A plugin that fails to import, is not
callable or reuses a taken name is skipped with a warning, so one broken package never takes
the zoo down with it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

from torch import nn

log = logging.getLogger(__name__)

GROUP = "landscape.models"

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class PluginModel:
    """One architecture a plugin contributes."""

    name: str
    builder: Builder
    description: str
    source: str  # "plugin <distribution> <version>", shown in listings and provenance


def discover(
    taken: Iterable[str], entry_points: Iterable[metadata.EntryPoint] | None = None
) -> list[PluginModel]:
    """Load every ``landscape.models`` entry point; names in ``taken`` (the zoo's) are refused.

    ``entry_points`` defaults to the installed ones (tests pass their own).
    """
    found = metadata.entry_points(group=GROUP) if entry_points is None else entry_points
    names = set(taken)
    models: list[PluginModel] = []
    for ep in sorted(found, key=lambda e: e.name):
        source = _source(ep)
        if ep.name in names:
            log.warning(
                "model plugin %r from %s refused: the name is already registered "
                "(a zoo model or another plugin); rename its entry point",
                ep.name,
                source,
            )
            continue
        try:
            builder = ep.load()
        except Exception as exc:  # a broken plugin must not break the zoo
            log.warning(
                "model plugin %r from %s skipped: importing %s failed: %s: %s",
                ep.name,
                source,
                ep.value,
                type(exc).__name__,
                exc,
            )
            continue
        if not callable(builder):
            log.warning(
                "model plugin %r from %s skipped: %s is a %s, not a builder function",
                ep.name,
                source,
                ep.value,
                type(builder).__name__,
            )
            continue
        models.append(PluginModel(ep.name, builder, _description(builder, ep.name), source))
        names.add(ep.name)
    return models


def _description(builder: Builder, name: str) -> str:
    doc = inspect.getdoc(builder)
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip() if doc else ""
    return first or f"{name} (no description given by its plugin)"


def _source(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return f"plugin {ep.value}"
    return f"plugin {dist.metadata['Name']} {dist.version}"
