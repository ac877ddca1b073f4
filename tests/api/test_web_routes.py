"""The routes the page leans on: limits and presets from the server, offline /docs, the shared
figure script and the metrics' definitions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.demo import DEMO_EPOCHS, demo_requests
from api.settings import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, workers=0, max_grid_points=2000, max_epochs=50)
    with TestClient(create_app(settings)) as c:
        yield c


def test_config_serves_the_settings_limits_and_the_demos_presets(client: TestClient) -> None:
    config = client.get("/api/config").json()
    assert config["limits"]["max_grid_points"] == 2000
    assert config["limits"]["max_epochs"] == 50
    assert config["limits"]["min_grid_points_per_axis"] == 2
    assert config["defaults"]["epochs"] == DEMO_EPOCHS
    demo = {
        (r.model, tuple(r.grid.xrange)): r.model_dump(mode="json", exclude_none=True)
        for r in demo_requests()
    }
    assert [p["id"] for p in config["presets"]] == ["resnet56-close", "resnet56", "resnet20"]
    assert "±0.25" in config["presets"][0]["title"]
    for preset in config["presets"]:
        assert len(preset["requests"]) == 2
        for body in preset["requests"]:
            # The demo's own request: same cache key, so presets open computed surfaces.
            assert {k: v for k, v in body.items() if k != "label"} == {
                k: v
                for k, v in demo[body["model"], tuple(body["grid"]["xrange"])].items()
                if k != "label"
            }
        assert client.post("/api/surfaces", json=preset["requests"][0]).status_code in (200, 202)


def test_docs_use_installed_files_only(client: TestClient) -> None:
    page = client.get("/docs").text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404
    assert client.get("/vendor/docs/..%2Fcore.py").status_code == 404


def test_figure_script_and_metrics_page(client: TestClient) -> None:
    script = client.get("/vendor/figure.js")
    assert script.headers["content-type"].startswith("application/javascript")
    assert "export function figure(" in script.text
    page = client.get("/help/metrics").text
    for anchor in ("sharpness", "roughness", "nonconvexity", "convex-fraction", "center"):
        assert f'id="{anchor}"' in page, anchor
    assert "<code>" in page and "http" not in page.split("<body>")[1].split("Back to")[0]
