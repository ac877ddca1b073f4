"""docker-compose.yml as an operator of a GPU box runs it: every setting of ``api/settings.py``
reaches the API and the worker (compose passes only the variables it names), its defaults are
the settings' own except the GPU budgets, and under those the paper's jobs are accepted while
the CPU defaults refuse them naming the budget, the time and what fits. The compile caches
live on the data volume and the worker's stop grace outlasts its own stop wait.

The file is read with PyYAML and its ``${VAR:-default}`` resolved here, as compose does with
none of the variables set; a test checks that resolution against ``docker-compose config``."""

from __future__ import annotations

import math
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.planning.cost import hessian_estimate, net_cost
from api.schedule import KIND_PRIORS, PRIOR_FLOPS_PER_SECOND
from api.settings import Settings
from landscape.cli.worker_cmd import STOP_WAIT_SECONDS
from landscape.specs import AnalysisSpec, DataSpec
from tests.api.test_budget_refusals import PAPER_SURFACE
from tests.test_deploy import DOCKERFILE, ROOT, _tool

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = ("api", "worker")
# ${VAR}, ${VAR:-default} (unset or empty: default), ${VAR-default} (unset: default)
SUBSTITUTION = re.compile(r"\$\{(\w+)(?:(:?-)([^}]*))?\}")

# Settings not forwarded from the operator's environment, each with why.
FIXED: dict[str, str] = {
    "data_dir": "the data volume's mount point, /data in every service",
    "workers": "per service: 0 in the API, which computes nothing; 1 per GPU worker process "
    "(its threads take turns on CUDA; more jobs at once: --scale worker=N)",
    "device": "per service: the API plans on its CPU, the worker computes on CUDA",
    "compute_device": "cuda in both: the API declares precision for the workers' device",
    "web_dir": "the image's copy of web/ (Dockerfile)",
    "host": "0.0.0.0 inside the container (Dockerfile); the host side is LANDSCAPE_BIND",
    "port": "8000 inside the container (Dockerfile); the host side is LANDSCAPE_PORT",
}
FROM_DOCKERFILE = ("web_dir", "host", "port")
# Defaults that differ from api/settings.py's (a 2-core CPU box's): one H100/H200-class GPU.
GPU_DEFAULTS: dict[str, object] = {
    "max_job_flops": 1e18,
    "max_job_memory_bytes": 64 * 2**30,
    "max_model_params": 200_000_000,
    "max_report_epochs": 300,
}
COMPILE_CACHES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH")

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def resolve(value: object, env: dict[str, str] | None = None) -> str:
    """A compose value with its substitutions made as compose makes them in ``env``."""
    env = env or {}

    def substitute(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        given = env.get(name)
        if (operator == ":-" and not given) or (operator == "-" and given is None):
            return default
        return given or ""

    return SUBSTITUTION.sub(substitute, str(value))


def environment(service: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as its container gets it (merge keys applied by PyYAML)."""
    raw = COMPOSE["services"][service]["environment"]
    return {name: resolve(value, env) for name, value in raw.items()}


def _variable(field: str) -> str:
    return f"LANDSCAPE_{field.upper()}"


def test_every_setting_reaches_the_api_and_the_worker_or_is_fixed() -> None:
    """A new field of Settings fails here until the compose file forwards it (or this test
    says why it is fixed)."""
    assert set(FIXED) <= set(Settings.model_fields), set(FIXED) - set(Settings.model_fields)
    for service in SERVICES:
        raw = COMPOSE["services"][service]["environment"]
        for field in Settings.model_fields:
            name = _variable(field)
            if field in FROM_DOCKERFILE:
                assert name not in raw, (service, name)
                assert re.search(rf"^\s+{name}=\S+", DOCKERFILE, re.M), name
            elif field in FIXED:
                assert name in raw and "${" not in str(raw[name]), (service, name, raw.get(name))
            else:
                forwarded = SUBSTITUTION.fullmatch(str(raw.get(name, "")))
                assert forwarded and forwarded.group(1) == name, (service, name, raw.get(name))
        unknown = {n for n in raw if n.startswith("LANDSCAPE_")} - {
            _variable(field) for field in Settings.model_fields
        }
        assert not unknown, f"{service} sets variables Settings does not read: {unknown}"


def test_an_exported_variable_reaches_both_services() -> None:
    env = {"LANDSCAPE_MAX_JOB_FLOPS": "3e17", "LANDSCAPE_ENGINE_DEVICES": "[0,1]"}
    for service in SERVICES:
        resolved = environment(service, env)
        assert resolved["LANDSCAPE_MAX_JOB_FLOPS"] == "3e17"
        assert resolved["LANDSCAPE_ENGINE_DEVICES"] == "[0,1]"


def compose_settings(monkeypatch: pytest.MonkeyPatch, service: str, **changes: Any) -> Settings:
    """``Settings`` as the service's container reads it from its environment (the real
    environment parsing: empty values, ``1e18``, ``true``), with ``changes`` on top."""
    for name in os.environ:
        if name.startswith("LANDSCAPE_"):
            monkeypatch.delenv(name)
    for name, value in environment(service).items():
        if name.startswith("LANDSCAPE_"):
            monkeypatch.setenv(name, value)
    return Settings(_env_file=None, **changes)  # type: ignore[call-arg]  # pydantic-settings


@pytest.mark.parametrize("service", SERVICES)
def test_compose_defaults_are_the_settings_own_but_the_gpu_budgets(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    composed = compose_settings(monkeypatch, service)
    own = Settings(_env_file=None)  # type: ignore[call-arg]
    for field in Settings.model_fields:
        if field in FIXED:
            continue
        expected = GPU_DEFAULTS.get(field, getattr(own, field))
        assert getattr(composed, field) == expected, field
    for field, value in GPU_DEFAULTS.items():
        assert value != Settings.model_fields[field].default, field


def test_the_resolution_here_is_what_docker_compose_makes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDSCAPE_")}
    no_dotenv = tmp_path / "empty.env"  # a developer's .env must not change the answer
    no_dotenv.touch()
    result = subprocess.run(
        [_tool("docker-compose"), "--env-file", str(no_dotenv), "-f",
         str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    for service in SERVICES:
        composed = {k: str(v) for k, v in config["services"][service]["environment"].items()}
        assert composed == environment(service), service


@pytest.fixture
def cifar_data(tmp_path: Path) -> Iterator[Path]:
    """A data folder where CIFAR-10's files are present (empty: planning only looks for
    them; nothing here computes)."""
    data = tmp_path / "data"
    folder = data / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in CIFAR10_FILES:
        (folder / name).touch()
    yield data


def _post(settings: Settings, path: str, body: dict[str, Any]) -> Any:
    with TestClient(create_app(settings)) as client:
        return client.post(path, json=body)


def test_the_papers_surface_and_training_are_accepted_with_the_compose_defaults(
    monkeypatch: pytest.MonkeyPatch, cifar_data: Path
) -> None:
    settings = compose_settings(monkeypatch, "api", data_dir=cifar_data, database_url=None)
    assert settings.workers == 0 and settings.device == "cpu"  # the API plans, never computes
    queued = _post(settings, "/api/surfaces", PAPER_SURFACE)
    assert queued.status_code == 202, queued.text
    estimate = queued.json()["job"]["estimate"]
    # 3.3e16 for the 51×51 grid over 50,000 images, 1.1e16 for 300 epochs of training
    assert estimate["flops"] == pytest.approx(4.39e16, rel=0.02), estimate
    # timed at a GPU's prior (COMPUTE_DEVICE cuda, FLOPS_PER_SECOND left empty): about an
    # hour and a quarter, not the months of a CPU's
    assert "prior of a CUDA worker" in estimate["basis"], estimate
    gpu_seconds = estimate["flops"] / PRIOR_FLOPS_PER_SECOND["cuda"]
    gpu_seconds += KIND_PRIORS["surface"].overhead_s  # the kinds' speeds are a CPU's
    assert estimate["seconds"] == pytest.approx(gpu_seconds, rel=0.01), estimate


def test_a_full_data_hessian_is_accepted_with_the_compose_defaults(
    monkeypatch: pytest.MonkeyPatch, cifar_data: Path
) -> None:
    settings = compose_settings(monkeypatch, "api", data_dir=cifar_data, database_url=None)
    # Hessian directions: Lanczos over the whole training split, then the grid
    hessian_directions = {**PAPER_SURFACE, "directions": {**PAPER_SURFACE["directions"],
                                                          "kind": "hessian"}}  # fmt: skip
    queued = _post(settings, "/api/surfaces", hessian_directions)
    assert queued.status_code == 202, queued.text
    # a Hessian analysis of the trained net at every cap of this server, the map excepted
    net = net_cost("resnet56", {}, (3, 32, 10))
    analysis = AnalysisSpec(
        checkpoint="trained.pt",
        data=DataSpec(name="cifar10"),
        top=settings.max_hessian_eigenvalues,
        bottom=settings.max_hessian_eigenvalues,
        trace_samples=settings.max_trace_samples,
        density_probes=settings.max_density_probes,
        density_steps=settings.max_lanczos_steps,
    )
    cost = hessian_estimate(analysis, 0, net, (3, 32, 10))
    assert 1e17 < cost.flops <= settings.max_job_flops
    assert cost.memory_bytes <= settings.max_job_memory_bytes


def test_the_cpu_defaults_refuse_the_papers_surface_saying_what_fits(cifar_data: Path) -> None:
    settings = Settings(_env_file=None, data_dir=cifar_data, workers=0)  # type: ignore[call-arg]
    refused = _post(settings, "/api/surfaces", PAPER_SURFACE)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "LANDSCAPE_MAX_JOB_FLOPS = 5e+14" in detail, detail
    assert "estimated 4.4e+16 FLOPs (training 1.1e+16, surface 3.3e+16)" in detail, detail
    # its time on this deployment, at a CPU's prior
    took = re.search(r"about ([\d.]+) days on this deployment", detail)
    assert took, detail
    days = 4.39e16 / (PRIOR_FLOPS_PER_SECOND["cpu"] * KIND_PRIORS["surface"].speed) / 86400
    assert float(took.group(1)) == pytest.approx(days, rel=0.02), detail
    # and the largest grid that fits once the net is trained: one point is a forward pass of
    # every training image
    per_point = net_cost("resnet56", {}, (3, 32, 10)).flops * 50_000
    side = math.isqrt(int(settings.max_job_flops // per_point))
    assert f"the largest grid that fits is {side}×{side} ({side * side} points)" in detail, detail


def test_compile_caches_live_on_the_data_volume() -> None:
    """A restarted worker finds what it compiled before: the caches are under the volume's
    mount point in compose and in the image."""
    worker = COMPOSE["services"]["worker"]
    mount = next(v.split(":")[1] for v in worker["volumes"] if v.startswith("landscape-data:"))
    env = environment("worker")
    assert env["LANDSCAPE_DATA_DIR"] == mount
    for name in COMPILE_CACHES:
        assert Path(env[name]).is_relative_to(mount), (name, env[name])
        assert re.search(rf"^\s*(ENV\s+)?{name}={re.escape(env[name])}\b", DOCKERFILE, re.M), name
    assert "TORCHINDUCTOR_CACHE_DIR" in environment("api")  # one anchor: every service alike


def test_the_stop_grace_outlasts_the_workers_own_stop_wait() -> None:
    """docker stop's SIGKILL comes only after the worker has waited for its job to reach a
    chunk boundary (a cold compile included), so the job is requeued, not lost mid-chunk."""
    grace = str(COMPOSE["services"]["worker"]["stop_grace_period"])
    seconds = int(grace.removesuffix("s"))
    assert seconds > STOP_WAIT_SECONDS + 10, (grace, STOP_WAIT_SECONDS)


def test_the_worker_health_check_is_the_cuda_check() -> None:
    check = COMPOSE["services"]["worker"]["healthcheck"]
    assert not check.get("disable"), check
    assert check["test"] == ["CMD", "landscape", "worker", "--check"], check
