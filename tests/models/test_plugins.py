"""Model plugins: an installed package's ``landscape.models`` entry points are listed, built,
trained and named on the command line like the zoo's own; broken or clashing ones are skipped
with a warning and leave the zoo intact."""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from landscape.models import build, list_models, model_identity
from landscape.models.plugins import GROUP, discover
from landscape.sources.checkpoint import load_checkpoint
from landscape.specs import DataSpec, TrainSpec
from landscape.train import train_model

PLUGIN = "toy-cnn"  # tests/plugins/landscape_toy_plugin, installed by `make test`
MAIN = "import sys; from landscape.cli import main; sys.exit(main())"


def _installed() -> bool:
    return any(ep.name == PLUGIN for ep in metadata.entry_points(group=GROUP))


pytestmark = pytest.mark.skipif(
    not _installed(),
    reason="the test plugin is not installed: pip install -e tests/plugins/landscape_toy_plugin",
)


def test_plugin_is_listed_with_its_source_and_description() -> None:
    info = {m.name: m for m in list_models()}
    assert info[PLUGIN].source.startswith("plugin landscape-toy-plugin ")
    assert info[PLUGIN].description.startswith("Toy CNN from a plugin package")
    assert info["resnet20"].source == "zoo"


def test_plugin_builds_records_its_identity_and_takes_model_args() -> None:
    model = build(PLUGIN, in_channels=1, num_classes=10, image_size=8, width=4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert model_identity(model) == (
        PLUGIN,
        {"in_channels": 1, "num_classes": 10, "image_size": 8, "width": 4},
    )


def test_plugin_model_trains_and_its_checkpoint_reloads(tmp_path: Path) -> None:
    spec = TrainSpec(
        model=PLUGIN,
        data=DataSpec(name="digits", train_size=64, test_size=32),
        epochs=1,
        batch_size=32,
        device="cpu",
    )
    metadata_ = train_model(spec, tmp_path / "toy.pt")
    assert metadata_["model"] == PLUGIN
    model, meta = load_checkpoint(tmp_path / "toy.pt")
    assert type(model).__name__ == "ToyCNN"
    assert meta["model"] == PLUGIN


def test_cli_trains_the_plugin_and_names_it_among_the_choices(tmp_path: Path) -> None:
    out = tmp_path / "toy.pt"
    tiny = ["--dataset", "digits", "--train-size", "32", "--test-size", "16", "--epochs", "1",
            "--device", "cpu"]  # fmt: skip
    ok = subprocess.run(
        [sys.executable, "-c", MAIN, "train", "--model", PLUGIN, "--out", str(out), *tiny],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert out.exists()
    bad = subprocess.run(
        [sys.executable, "-c", MAIN, "train", "--model", "no-such-net", "--out", str(out), *tiny],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert PLUGIN in bad.stderr and "resnet20" in bad.stderr
    assert "Traceback" not in bad.stderr


def _ep(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=GROUP)


def test_broken_clashing_and_non_callable_plugins_are_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = _ep("good-net", "landscape_toy_plugin:build_toy_cnn")
    eps = [
        good,
        _ep("broken-net", "no_such_package_for_landscape.models:build"),
        _ep("resnet20", "landscape_toy_plugin:build_toy_cnn"),  # a zoo name
        _ep("not-a-builder", "landscape.models.plugins:GROUP"),  # a string
        _ep("good-net", "landscape_toy_plugin:ToyCNN"),  # a second plugin's clash
    ]
    with caplog.at_level(logging.WARNING, logger="landscape.models.plugins"):
        found = discover(taken=["resnet20"], entry_points=eps)
    assert [m.name for m in found] == ["good-net"]
    assert found[0].builder(in_channels=1, num_classes=3, image_size=8)(
        torch.randn(1, 1, 8, 8)
    ).shape == (1, 3)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "'broken-net'" in messages and "ModuleNotFoundError" in messages
    assert "'resnet20'" in messages and "already registered" in messages
    assert "'not-a-builder'" in messages and "not a builder function" in messages
    assert messages.count("'good-net'") == 1  # the second one, refused


def test_plugin_is_listed_and_its_surface_completes_through_the_service(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from api.worker import Worker

    settings = Settings(
        data_dir=tmp_path / "data", workers=0, device="cpu", engine_workers=1,
        engine_compile=False, progress_every_seconds=0.0, api_token=None,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        listed = {m["name"]: m for m in client.get("/api/models").json()}
        assert listed[PLUGIN]["description"].startswith("Toy CNN from a plugin package")
        assert listed[PLUGIN]["source"].startswith("plugin landscape-toy-plugin ")
        assert {m["source"] for n, m in listed.items() if n != PLUGIN} == {"zoo"}
        body = {
            "model": PLUGIN, "dataset": "digits", "train": {"epochs": 1}, "train_size": 100,
            "grid": {"nx": 3, "ny": 3, "xrange": [-1, 1], "yrange": [-1, 1]},
        }  # fmt: skip
        posted = client.post("/api/surfaces", json=body)
        assert posted.status_code == 202, posted.text
        state = client.app.state  # type: ignore[attr-defined]
        worker = Worker(state.queue, state.settings, state.sessions)
        while worker.run_once():
            pass
        job = client.get(f"/api/jobs/{posted.json()['job']['id']}").json()
        assert job["status"] == "done", job["error"]
        surface = client.get(f"/api/surfaces/{job['surface_id']}").json()
        assert surface["model"] == PLUGIN and surface["status"] == "complete"
