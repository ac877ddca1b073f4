"""The skip-vs-plain reproduction end to end on a tiny recipe: both files, every section
filled, nothing fetched from the network, cached work reused on a rerun; the families'
recipes, the recurrent family end to end, a diverged net reported instead of failing."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from landscape.errors import CancelledError, SpecError, UnknownNameError
from landscape.models import build
from landscape.report.recipe import FAMILIES, ReproduceSpec, family_of, family_spec
from landscape.report.reproduce import ReproduceResult, reproduce, surface_file, surface_options
from landscape.specs import DataSpec, EngineOptions, to_dict
from landscape.storage import read_surface

pytest_plugins = ["browser_support"]  # the session's Chromium (one Playwright per process)
TINY = ReproduceSpec(
    pairs=(("mlp-residual", "mlp-plain"),),
    data=DataSpec(train_size=120, test_size=60),
    seeds=(0, 1),
    epochs=1,
    model_args=(("depth", 2), ("width", 16)),
    warmup_models=(),
    ranges=((0.25, 5), (1.0, 5)),
    curvature_points=2,
    hessian_samples=32,
    slq_probes=2,
    slq_steps=8,
    device="cpu",
    workers=1,
)

# The report page's sections, in order.
SECTIONS = (
    "findings",
    "recipe",
    "degradation",
    "surfaces",
    "metrics",
    "curvature",
    "spectra",
    "gradient-flow",
    "sharpness",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReproduceResult, list[str]]:
    stages: list[str] = []
    out = tmp_path_factory.mktemp("reproduce")
    result = reproduce(TINY, out, on_progress=lambda what, done, total: stages.append(what))
    return result, stages


@pytest.mark.slow
def test_tiny_recipe_end_to_end(tiny: tuple[ReproduceResult, list[str]]) -> None:
    result, stages = tiny
    tmp_path = result.json_path.parent
    assert result.json_path.exists() and result.html_path.exists()
    assert stages[0] == "train mlp-residual seed 0" and stages[-1] == "report written"
    report = json.loads(result.json_path.read_text())
    assert report["recipe"]["epochs"] == 1
    assert report["recipe"]["precision"] == "fp32"  # the default, not the engine's auto
    assert report["precision"] == {
        "surfaces": "fp32", "training": "fp32", "hessian": "fp32", "gradient_flow": "fp32",
    }  # fmt: skip
    table = {row["model"]: row for row in report["degradation"]}
    assert set(table) == {"mlp-residual", "mlp-plain"}
    for row in table.values():
        values = row["test_acc"]["values"]
        assert len(values) == 2 and row["test_acc"]["mean"] == pytest.approx(sum(values) / 2)
    assert set(report["nets"]) == {"mlp-residual/seed0", "mlp-plain/seed0"}  # surface seeds: 1
    net = report["nets"]["mlp-plain/seed0"]
    assert [s["n"] for s in net["surfaces"]] == [5, 5]
    assert len(net["surfaces"][0]["train_loss"]) == 5
    assert net["surfaces"][0]["metrics"]["convex_fraction"] is not None
    flow = net["gradient_flow"]["trained"]
    assert flow["depth"] == list(range(1, len(flow["names"]) + 1))
    assert flow["names"][0] == "stem.weight" and flow["names"][-1] == "head.weight"
    assert flow["settings"]["precision"] == "fp32"
    assert len(net["density"]["nodes"]) == 2 and net["density"]["steps"] == 8
    assert len(net["hessian"]["top_eigenvalues"]) == 3
    assert len(net["curvature"]["lambda_min"]) == 2
    # λmax along training: the first seed's snapshots at epoch 0 and 1, warm-started
    assert [r["epoch"] for r in net["sharpness"]] == [0, 1]
    assert all(r["lambda_max"] > 0 and r["matvecs"] > 0 for r in net["sharpness"])
    assert not list((tmp_path / "checkpoints").glob("*-s1-*.snapshots"))  # seed 1: no surface

    for surface in net["surfaces"]:
        assert read_surface(surface["path"]).precision == "fp32"

    page = result.html_path.read_text()
    assert "Computed in: surfaces fp32, training fp32, hessian fp32" in page
    assert not re.search(r"<script[^>]*src=", page)  # Plotly is inlined
    assert not re.search(r"<link[^>]*href=[\"']https?://", page)
    found = report["findings"]
    assert [d["pair"] for d in found["degradation"]] == [["mlp-residual", "mlp-plain"]]
    ranked = {(r["metric"], r["half_width"]) for r in found["metric_rankings"]}
    assert ("level_set_convexity", 1.0) in ranked and ("curvature_nonconvex", 0.25) in ranked
    assert ("curvature_nonconvex", 1.0) not in ranked  # the map is on the first range only
    assert len(net["curvature"]["residual_min"]) == 2 and net["curvature"]["steps"] == 30
    for section in SECTIONS:
        body = page.split(f"<section id='{section}'>", 1)[1].split("</section>", 1)[0]
        assert "<table>" in body or 'class="fig"' in body, section
    # 1 pair: 4 surfaces + 2 curvature + 1 density + 1 flow + 1 sharpness
    assert page.count('class="fig"') == 9
    assert page.count("Plotly.newPlot(") == 9
    sharpness = {row["net"]: row for row in found["sharpness"]}
    first, last = (r["lambda_max"] for r in net["sharpness"])
    assert sharpness["mlp-plain/seed0"] == {
        "net": "mlp-plain/seed0", "init": first, "last": last, "peak": last, "peak_epoch": 1,
    }  # fmt: skip
    assert found["families"][0]["plain_sharpens_more"] in ("yes", "no")  # one epoch compared
    assert found["families"][0]["sharpness_compared"] == 1

    # a rerun reuses every checkpoint, surface and analysis
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix in {".pt", ".h5"}}
    again = reproduce(TINY, tmp_path)
    assert again.report["degradation"] == report["degradation"]
    assert again.report["nets"] == report["nets"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_stop_and_bad_recipes(tmp_path: Path) -> None:
    with pytest.raises(CancelledError, match="stopped"):
        reproduce(TINY, tmp_path, should_stop=lambda: True)
    with pytest.raises(SpecError, match="seeds"):
        ReproduceSpec(seeds=(0, 0))
    with pytest.raises(SpecError, match="pairs"):
        ReproduceSpec(pairs=())
    with pytest.raises(UnknownNameError, match="unknown model 'nosuch'"):
        ReproduceSpec(pairs=(("nosuch", "resnet20"),))
    with pytest.raises(SpecError, match="ranges"):
        ReproduceSpec(ranges=((0.0, 5),))
    with pytest.raises(SpecError, match="epochs"):
        ReproduceSpec(epochs=0)
    with pytest.raises(SpecError, match=r"curvature_steps must be 2\.\.200"):
        ReproduceSpec(curvature_steps=1)
    with pytest.raises(SpecError, match="slq_steps"):
        ReproduceSpec(slq_steps=10_000)
    spec = ReproduceSpec()
    assert ReproduceSpec.from_dict(json.loads(json.dumps(to_dict(TINY)))) == TINY
    with pytest.raises(SpecError, match="unknown ReproduceSpec"):
        ReproduceSpec.from_dict({"epoch": 3})
    assert spec.train_spec("resnet56-noshort", 2).warmup_epochs == 1
    assert spec.train_spec("resnet20", 2).warmup_epochs == 0
    assert spec.train_spec("resnet20", 2).lr == 0.1 and spec.train_spec("resnet20", 2).seed == 2


def test_precision_is_a_recipe_value_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The surfaces' precision is strict fp32 unless the recipe says otherwise; tf32 or bf16
    where there is no CUDA is refused before a folder is made (the engine's rule); an engine
    of another precision than the recipe's is refused rather than recorded as the recipe's."""
    assert ReproduceSpec().precision == "fp32" and surface_options(TINY).precision == "fp32"
    with pytest.raises(UnknownNameError, match="precision 'fp16'"):
        ReproduceSpec(precision="fp16")  # type: ignore[arg-type]
    out = tmp_path / "report"
    for precision in ("tf32", "bf16"):
        with pytest.raises(SpecError, match=f"precision '{precision}' needs a CUDA device"):
            reproduce(dataclasses.replace(TINY, precision=precision), out)
    assert not out.exists()
    with pytest.raises(SpecError, match="differ from the recipe"):
        reproduce(TINY, out, options=EngineOptions(device="cpu", workers=1, precision="auto"))
    worker = EngineOptions(device="cpu", workers=1, precision="fp32", backend="ray")
    assert surface_options(TINY, worker) == worker  # a worker's options are kept as given
    assert surface_options(dataclasses.replace(TINY, precision="auto")).precision == "fp32"
    monkeypatch.setattr("landscape.engine.devices.resolve_device", lambda _: torch.device("cuda"))
    on_cuda = dataclasses.replace(TINY, device="cuda")
    for asked, computed in (("auto", "tf32"), ("bf16", "bf16"), ("fp32", "fp32")):
        assert surface_options(dataclasses.replace(on_cuda, precision=asked)).precision == computed
    names = {p: surface_file("net.pt", 0.25, 5, tmp_path, p).name for p in ("fp32", "tf32")}
    assert names == {"fp32": "net-r0.25-n5.h5", "tf32": "net-r0.25-n5-tf32.h5"}


@pytest.mark.slow
@pytest.mark.browser
def test_report_opens_offline_in_chromium(
    tiny: tuple[ReproduceResult, list[str]], browser: Any
) -> None:
    """Every figure is drawn with the network cut off: nothing is fetched at open time."""
    result, _ = tiny
    requested: list[str] = []
    page = browser.new_page()  # the suite's one Chromium (tests/browser_support.py)
    try:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def block(route: Any) -> None:
            if not route.request.url.startswith("file://"):
                requested.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        page.route("**/*", block)
        page.goto(result.html_path.as_uri())
        page.wait_for_function("document.querySelectorAll('.fig .main-svg').length >= 9")
        drawn = page.evaluate("document.querySelectorAll('.fig.js-plotly-plot').length")
        sections = page.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
    finally:
        page.close()
    assert drawn == 9
    assert sections == list(SECTIONS)
    assert not errors and not requested


def test_family_recipes() -> None:
    assert family_spec("resnet") == ReproduceSpec()
    for name, family in FAMILIES.items():
        spec = family_spec(name)
        assert spec.pairs == family.pairs and spec.seeds == (0, 1, 2) and spec.epochs == 30
        assert {family_of(m) for m in spec.models} == {name}
        quick = family_spec(name, quick=True, device="cpu")
        assert quick.seeds == (0, 1) and quick.epochs == family.quick_epochs
        assert quick.ranges == ((0.25, 13), (1.0, 9)) and quick.device == "cpu"
        for model in spec.models:  # every net of the family builds with the family's arguments
            spec.train_spec(model, 0)
            build(model, in_channels=1, image_size=8, **dict(spec.model_args))
    recurrent = family_spec("recurrent")
    assert recurrent.models == ("lstm", "rnn", "gru")  # rnn is trained and measured once
    assert family_spec("highway").model_args == (("gate_bias", -4),)
    with pytest.raises(UnknownNameError, match="unknown family 'densenet'"):
        family_spec("densenet")
    # every net's warm-up is checked up front, not after the first nets trained
    with pytest.raises(SpecError, match="warmup_epochs"):
        ReproduceSpec(epochs=1)
    assert family_of("mlp-plain") == "mlp" and family_of("resnet56-noshort") == "resnet"


@pytest.mark.slow
def test_recurrent_family_end_to_end(tmp_path: Path) -> None:
    """rnn against lstm and gru: gradient flow through time in the numbers, the figures and
    the findings; a net that diverges is reported as such instead of failing the report."""
    spec = family_spec(
        "recurrent",
        data=DataSpec(train_size=120, test_size=60),
        seeds=(0, 1),
        epochs=1,
        model_args=(("hidden", 8),),
        ranges=((0.25, 5),),
        curvature_points=2,
        hessian_samples=32,
        slq_probes=2,
        slq_steps=8,
        device="cpu",
        workers=1,
    )
    result = reproduce(spec, tmp_path / "recurrent")
    report = result.report
    assert [row["model"] for row in report["degradation"]] == ["lstm", "rnn", "gru"]
    flow = report["nets"]["rnn/seed0"]["gradient_flow"]["init"]
    assert len(flow["time_grad_norm"]) == 8 and flow["through_time_ratio"] is not None
    rows = report["findings"]["families"]
    assert [r["pair"] for r in rows] == [["lstm", "rnn"], ["gru", "rnn"]]
    assert all(r["family"] == "recurrent" and r["gradient_over"] == "time steps" for r in rows)
    assert all(r["lower_loss"] in ("yes", "no", "no difference") for r in rows)
    page = result.html_path.read_text()
    assert "Across families" in page and page.count(", through time") == 2
    assert "<h1>Identity paths vs plain twins (recurrent), measured</h1>" in page
    # 2 pairs × (2 surfaces + density + 2 flows + sharpness) with rnn's surfaces drawn in
    # both pairs, + 3 curvature maps (one per net)
    assert page.count('class="fig"') == 2 * (2 + 1 + 2 + 1) + 3

    diverging = ReproduceSpec(
        pairs=(("mlp-residual", "mlp-plain"),),
        data=DataSpec(train_size=64, test_size=32),
        seeds=(0,),
        epochs=1,
        lr=1e30,  # the weights overflow to NaN in the first steps
        model_args=(("depth", 2), ("width", 8)),
        warmup_models=(),
        ranges=((0.25, 3),),
        device="cpu",
        workers=1,
    )
    result = reproduce(diverging, tmp_path / "diverging")
    assert result.report["nets"]["mlp-plain/seed0"] == {
        "model": "mlp-plain",
        "seed": 0,
        "diverged": True,
    }
    assert result.report["findings"]["families"][0]["smoother"] is None
    assert result.html_path.read_text().count("training diverged") == 2
