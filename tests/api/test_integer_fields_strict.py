"""Integer fields of every request schema refuse floats, ``3.0`` included, as strict types
promise: a ``Literal[1, 2, 3]`` used to take ``3.0`` (it equals 3 to Python)."""

from __future__ import annotations

import importlib
import pkgutil
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

import api.schemas
from api.app import create_app
from api.schemas.common import Strict
from tests.api.test_api import TINY, tiny_settings


def _request_models() -> list[type[BaseModel]]:
    for info in pkgutil.iter_modules(api.schemas.__path__):
        importlib.import_module(f"api.schemas.{info.name}")
    found, todo = [], list(Strict.__subclasses__())
    while todo:
        model = todo.pop()
        found.append(model)
        todo.extend(model.__subclasses__())
    return sorted(found, key=lambda m: m.__name__)


def _integer_value(annotation: Any) -> int | None:
    """An integer the annotation takes (an ``int`` or a ``Literal`` of ints), else None."""
    origin = typing.get_origin(annotation)
    if annotation is int:
        return 1
    if origin is typing.Literal:
        ints = [v for v in typing.get_args(annotation) if type(v) is int]
        return ints[-1] if ints else None
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            value = _integer_value(arg)
            if value is not None:
                return value
    return None


INTEGER_FIELDS = [
    (model, name, value)
    for model in _request_models()
    for name, field in model.model_fields.items()
    if (value := _integer_value(field.annotation)) is not None
]


def test_the_walk_finds_the_integer_fields() -> None:
    names = {(m.__name__, n) for m, n, _ in INTEGER_FIELDS}
    assert {("GridRequest", "dim"), ("GridRequest", "nx"), ("HessianRequest", "top")} <= names


@pytest.mark.parametrize(
    ("model", "name", "value"), INTEGER_FIELDS, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_a_float_is_refused_where_an_integer_is_required(
    model: type[BaseModel], name: str, value: int
) -> None:
    with pytest.raises(ValidationError) as raised:
        model.model_validate({name: float(value)})
    assert any(error["loc"][:1] == (name,) for error in raised.value.errors()), raised.value


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings(tmp_path / "data"))) as test_client:
        yield test_client


def test_dim_three_point_zero_is_a_422(client: TestClient) -> None:
    model_args = {**TINY, "model_args": {"depth": 2.0}}
    assert client.post("/api/surfaces", json=model_args).status_code == 422  # a builder's int
    body = {**TINY, "grid": {"nx": 3, "ny": 3, "nz": 3, "dim": 3.0}}
    answer = client.post("/api/surfaces", json=body)
    assert answer.status_code == 422, answer.text
    assert "must be an integer, not 3.0" in answer.text
    assert client.post(
        "/api/surfaces", json={**body, "grid": {**body["grid"], "dim": 3}}
    ).is_success
