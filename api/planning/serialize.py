"""One typed serializer for the plans job rows store, driven by each plan's dataclass fields.

A plan is written once by the route and read back by a worker, possibly of a later version, so
the JSON shape is the contract: paths are strings, tuples lists, library specs ``to_dict``
less the fields saying where a job runs (``stored_spec``). Reading follows the type hints: a
key missing from an older row takes the field's default (``None`` for an optional field
without one), or the place ``stored_before`` names; keys of older versions no field reads
are ignored.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from api.planning.common import stored_spec
from landscape.specs import from_dict

PlanT = TypeVar("PlanT")
_STORED_BEFORE = "stored_before"
_ABSENT = object()


class StoredPlanError(ValueError):
    """A stored plan this version cannot read (a missing key or a value of the wrong type)."""


def stored_before(*path: str) -> dict[str, Any]:
    """Field metadata: where rows stored before the field existed kept its value."""
    return {_STORED_BEFORE: path}


def plan_to_json(plan: Any) -> dict[str, Any]:
    """The plan as its job row stores it: plain JSON, read back by ``plan_from_json``."""
    assert dataclasses.is_dataclass(plan) and not isinstance(plan, type)
    return {f.name: _encode(getattr(plan, f.name)) for f in dataclasses.fields(plan)}


def plan_from_json(cls: type[PlanT], data: Mapping[str, Any]) -> PlanT:
    """Rebuild a plan of ``cls`` from a stored row, this version's or an older one's."""
    assert dataclasses.is_dataclass(cls)
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if f.name in data:
            raw = data[f.name]
        elif _lookup(data, f.metadata.get(_STORED_BEFORE, ())) is not _ABSENT:
            raw = _lookup(data, f.metadata[_STORED_BEFORE])
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        elif _optional(hint):
            raw = None
        else:
            raise StoredPlanError(f"stored {cls.__name__} has no {f.name!r}")
        kwargs[f.name] = _decode(hint, raw, f"{cls.__name__}.{f.name}")
    return cls(**kwargs)


class StoredPlan:
    """Base of every job kind's plan: ``to_json`` / ``from_json`` through this module."""

    def to_json(self) -> dict[str, Any]:
        return plan_to_json(self)

    @classmethod
    def from_json(cls: type[PlanT], data: Mapping[str, Any]) -> PlanT:
        return plan_from_json(cls, data)


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return stored_spec(value)  # a library spec: the worker fills in where it runs
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    return value  # None, str, int, float, bool, or a dict of plain JSON


def _decode(hint: Any, raw: Any, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        (inner,) = (arg for arg in args if arg is not type(None))
        return _decode(inner, raw, where)
    if hint is Path:
        return Path(_expect(raw, str, where))
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, _expect(raw, dict, where))  # type: ignore[arg-type]
    if origin is tuple:
        (item,) = (arg for arg in args if arg is not Ellipsis)
        return tuple(_decode(item, value, where) for value in _expect(raw, list, where))
    if origin is dict:
        return dict(_expect(raw, dict, where))
    return _expect(raw, hint, where)  # str, int, bool


def _expect(raw: Any, kind: type, where: str) -> Any:
    if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
        raise StoredPlanError(f"{where} is stored as {raw!r}, not {kind.__name__}")
    return raw


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in nested mappings, or ``_ABSENT`` (also for an empty path)."""
    if not path:
        return _ABSENT
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return _ABSENT
        data = data[key]
    return data
