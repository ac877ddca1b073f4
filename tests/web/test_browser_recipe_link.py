"""The page's "About this surface" panel links to the surface's recipe download.

The surface is a real file written through ``landscape.storage`` and turned into the API's JSON
by ``api.views.surface_data``; the page gets it by request interception. Only the link is
checked here (the endpoint itself: tests/api/test_api_recipe.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from api.db import SurfaceRecord
from api.views import surface_data
from landscape import storage as store
from landscape.specs import GridSpec, SurfaceSpec

pytest.register_assert_rewrite("browser_support")

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["browser_support"]  # the server, browser and page fixtures

SURFACE_ID = "ab12cd34"


def _surface_body(path: Path) -> str:
    grid = GridSpec(n_x=3, n_y=3)
    spec = SurfaceSpec(checkpoint="ckpt.pt", grid=grid)
    x, y = store.grid_coordinates(grid)
    directions = [{"w": torch.ones(2)} for _ in range(2)]
    store.create_surface_file(
        path, spec, x=x, y=y, directions=directions, provenance={"checkpoint_sha256": "cd" * 32}
    )
    flat = np.arange(grid.n_points)
    values = 1.0 + (store.flat_coordinates(x, y, flat) ** 2).sum(axis=1)
    store.write_points(path, flat, {"train_loss": values, "train_acc": 1 / values})
    record = SurfaceRecord(
        id=SURFACE_ID, label="bowl", model="bowl", dataset="digits", checkpoint_id="c",
        request={},
    )  # fmt: skip
    return surface_data(record, store.read_surface(path)).model_dump_json()


def test_about_this_surface_links_to_its_recipe(server: str, page: Any, tmp_path: Path) -> None:
    body = _surface_body(tmp_path / "s.h5")
    page.route(
        f"{server}/api/surfaces/{SURFACE_ID}",
        lambda route: route.fulfill(status=200, content_type="application/json", body=body),
    )
    page.goto(f"{server}/#/surfaces/{SURFACE_ID}")
    link = page.get_by_role("region", name="About this surface").locator("a.recipe-link")
    link.wait_for()
    assert link.get_attribute("href") == f"/api/surfaces/{SURFACE_ID}/recipe"
    assert link.get_attribute("download") == f"surface-{SURFACE_ID}.recipe.json"
