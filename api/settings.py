"""Service settings, read from ``LANDSCAPE_*`` environment variables (or a ``.env`` file).

Only the shells read these; the library takes explicit arguments (data dir, device, limits never
reach ``landscape/`` as globals). Tests build a ``Settings(...)`` and pass it to ``create_app``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from landscape.errors import SpecError
from landscape.specs import MAX_CURVATURE_GRID, MAX_DENSITY_PROBES, MAX_LANCZOS_STEPS

# web/ sits next to api/ in a checkout; images that install the package copy it and set
# LANDSCAPE_WEB_DIR instead.
_DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web"


DEFAULT_TOKEN_NAME = "default"  # how LANDSCAPE_API_TOKEN is named in the per-token limits


class ApiToken(BaseModel):
    """One client's bearer token (``LANDSCAPE_API_TOKENS``): its jobs count against its own
    queue allowance, so users behind one address or tunnel do not share one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="named in limit messages and jobs"
    )
    token: str = Field(min_length=1, max_length=1000, repr=False)
    max_active_jobs: int | None = Field(
        None, ge=1, description="queued + running jobs of this token; default per-client limit"
    )


class Settings(BaseSettings):
    """Everything an operator may change without touching code."""

    # An empty variable is an unset one (compose forwards unset settings as `${LANDSCAPE_X:-}`).
    model_config = SettingsConfigDict(
        env_prefix="LANDSCAPE_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    data_dir: Path = Field(Path("cache"), description="checkpoints/, surfaces/, jobs database")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: sqlite file <data_dir>/jobs.sqlite3"
    )
    datasets_dir: Path | None = Field(
        None, description="where data sets needing files live; default <data_dir>/datasets"
    )
    allow_download: bool = Field(False, description="let workers download missing data sets")
    web_dir: Path = Field(_DEFAULT_WEB_DIR, description="static web client served at /")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    api_token: str | None = Field(None, description="when set, POST/DELETE need Bearer <token>")
    api_tokens: tuple[ApiToken, ...] = Field(
        (),
        description='more tokens, each with its own queue allowance: JSON [{"name", "token", '
        '"max_active_jobs"}]; any of them (or api_token, named "default") is accepted',
    )
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="addresses or networks (JSON list) whose X-Forwarded-For names the client "
        "for the per-client limits; from any other peer the header is ignored",
    )
    protect_reads: bool = Field(False, description="also require the token on GET endpoints")

    max_grid_points: int = Field(40401, ge=1, description="nx × ny (× nz) limit per surface (201²)")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="checkpoint file size")
    max_onnx_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="ONNX upload size (also bounded by max_upload_bytes)"
    )
    max_json_bytes: int = Field(
        64 * 1024, ge=1024, description="JSON request body size (checked before it is read)"
    )
    max_checkpoint_unpacked_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1,
        description="an upload's declared tensor bytes (zip entries, safetensors header)",
    )
    max_active_jobs: int = Field(100, ge=1, description="queued + running jobs, all clients")
    max_active_jobs_per_client: int = Field(
        10,
        ge=1,
        description="queued + running jobs of one client: one token, or one address on a "
        "server without tokens (a report counts as one)",
    )
    allow_open: bool = Field(
        False, description="allow serving on a non-loopback address without an API token"
    )
    max_epochs: int = Field(300, ge=1)
    max_train_size: int | None = Field(None, ge=1, description="cap on training subset size")
    # Curvature analysis (POST /api/surfaces/{id}/hessian): every eigenvalue, probe and map
    # point costs Hessian-vector products over the whole training subset, so each is capped.
    max_hessian_eigenvalues: int = Field(10, ge=1, description="cap on top and on bottom")
    max_trace_samples: int = Field(200, ge=1, description="cap on Hutchinson probes")
    max_curvature_grid: int = Field(
        MAX_CURVATURE_GRID,
        ge=1,
        le=MAX_CURVATURE_GRID,
        description="cap on curvature map points per axis (at most the library's)",
    )
    max_density_probes: int = Field(
        20,
        ge=1,
        le=MAX_DENSITY_PROBES,
        description="cap on eigenvalue-density (SLQ) probes, each a Lanczos run",
    )
    max_lanczos_steps: int = Field(
        100,
        ge=2,
        le=MAX_LANCZOS_STEPS,
        description="cap on fixed Lanczos steps (density probes, map points); each step keeps "
        "one basis vector of every parameter in memory",
    )

    # Budgets of one job, estimated from its plan before it is queued (api/planning/cost.py):
    # over one, the request is a 422 naming it. The defaults fit a 24 GB, 2-core CPU box
    # (docs/deploy.md gives a GPU box's).
    max_model_params: int = Field(20_000_000, ge=1, description="parameters of a job's largest net")
    max_job_memory_bytes: int = Field(
        8 * 2**30,
        ge=1,
        description="estimated peak memory of one job: weights, optimizer state, activations, "
        "Lanczos basis and data",
    )
    max_job_flops: float = Field(
        5e14,
        gt=0,
        allow_inf_nan=False,
        description="the largest estimated total FLOPs of one job, all its parts together "
        "(training a model not yet cached, directions and every grid point; a report's "
        "trainings, surfaces and analyses; an analysis's Hessian-vector products): checked "
        "from the cost model before the job is queued (422 over it), never while it runs. "
        "Not a time limit: 5e14 at a CPU worker's assumed 3e9 FLOP/s is about 46 hours",
    )

    # Reproduction reports (POST /api/reports): each trains nets × seeds models, then computes
    # surfaces and Hessian numbers for them; the recipe's defaults fit these caps.
    max_report_epochs: int = Field(30, ge=1, description="cap on a report's training epochs")
    max_report_trainings: int = Field(
        12, ge=1, description="cap on a report's trainings (nets × seeds)"
    )

    workers: int = Field(1, ge=0, description="in-process job workers started with the app")
    # The fair queue (api/schedule.py, docs/deploy.md): short jobs have a lane of their own,
    # long ones start shortest-first until they have waited queue_aging_seconds.
    express_workers: int = Field(
        1, ge=0, description="extra workers taking only jobs estimated under express_max_seconds"
    )
    express_max_seconds: float = Field(
        120.0, ge=0, allow_inf_nan=False, description="the express lane's cut-off (estimated run)"
    )
    queue_aging_seconds: float = Field(
        1800.0,
        ge=0,
        allow_inf_nan=False,
        description="a job queued this long goes ahead of every younger one",
    )
    flops_per_second: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="FLOP rate assumed until jobs have finished here (then it is measured); "
        "unset or empty: the prior of the workers' device class (compute_device): 3e9 for a "
        "CPU, 1e13 for a CUDA GPU (api/schedule.py, PRIOR_FLOPS_PER_SECOND)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where this process's workers run jobs (read at run time)"
    )
    # The API of a GPU deployment runs on a CPU container: it declares each job's precision
    # against the workers' device, which it names here instead of probing its own.
    compute_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="the device the service's workers compute on, against which the API "
        "declares precision=auto; auto: this process's own device (landscape serve). Give the "
        "API and every worker the same value",
    )
    engine_workers: int | None = Field(None, ge=1, description="CPU processes per surface")
    engine_compile: bool = Field(True, description="torch.compile the per-point forward")
    engine_precision: Literal["auto", "fp32", "tf32", "bf16"] = Field(
        "auto", description="auto: tf32 on CUDA, fp32 on CPU (docs/performance.md)"
    )
    engine_devices: tuple[int, ...] | None = Field(
        None, description="CUDA device indices a surface uses; default every visible GPU"
    )
    gpu_memory_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="share of each GPU's memory this worker process may use (its batches are "
        "sized from it): 1/N for N worker containers on one GPU; default the whole GPU",
    )
    engine_backend: Literal["local", "ray"] = Field(
        "local", description="ray: a surface's chunks run as Ray tasks across a cluster"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join; default RAY_ADDRESS or a local Ray instance"
    )

    lease_seconds: float = Field(30.0, gt=0, description="a running job's claim lasts this long")
    poll_seconds: float = Field(1.0, gt=0, description="idle workers look for jobs this often")
    progress_every_seconds: float = Field(0.5, ge=0, description="progress write throttle")
    cancel_wait_seconds: float = Field(10.0, ge=0, description="DELETE waits this long to stop")
    events_poll_seconds: float = Field(0.5, gt=0, description="SSE streams re-read the job")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _unique_tokens(self) -> Settings:
        names = [DEFAULT_TOKEN_NAME] if self.api_token else []
        names += [token.name for token in self.api_tokens]
        if len(set(names)) < len(names):
            raise ValueError(
                f"token names must differ (LANDSCAPE_API_TOKEN is {DEFAULT_TOKEN_NAME!r})"
            )
        secrets_given = [t.token for t in self.tokens]
        if len(set(secrets_given)) < len(secrets_given):
            raise ValueError("two API tokens have the same value")
        return self

    @model_validator(mode="after")
    def _absolute_paths(self) -> Settings:
        # Relative paths are resolved once, so worker threads and the API agree on them.
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.api_token:  # an empty LANDSCAPE_API_TOKEN (compose default) means none
            self.api_token = None
        if not self.ray_address:  # likewise an empty LANDSCAPE_RAY_ADDRESS
            self.ray_address = None
        if self.datasets_dir is not None:
            self.datasets_dir = self.datasets_dir.expanduser().resolve()
        return self

    @property
    def tokens(self) -> tuple[ApiToken, ...]:
        """Every accepted token: ``api_token`` (named "default") and ``api_tokens``."""
        single = (
            (ApiToken(name=DEFAULT_TOKEN_NAME, token=self.api_token),) if self.api_token else ()
        )
        return single + self.api_tokens

    def token_for(self, given: str) -> ApiToken | None:
        """The token ``given`` is, or None; every one is compared, in constant time each."""
        found = None
        for token in self.tokens:
            if secrets.compare_digest(given.encode(), token.token.encode()):
                found = token
        return found

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.sqlite3'}"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def surfaces_dir(self) -> Path:
        return self.data_dir / "surfaces"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def data_root(self) -> Path:
        return self.datasets_dir or self.data_dir / "datasets"

    def ensure_dirs(self) -> None:
        """Create the data folders (idempotent; called by the app and by workers)."""
        for folder in (self.data_dir, self.checkpoints_dir, self.surfaces_dir):
            folder.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and ``overrides`` (the CLI's options); a bad value is
    a ``SpecError`` naming its variable in one line, never echoing it (tokens are secrets)."""
    try:
        return Settings(**overrides)
    except SettingsError as exc:  # a list or object setting that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"LANDSCAPE_{found.group(1).upper()}" if found else "a LANDSCAPE_ setting"
        raise SpecError(f"{name} is not valid JSON (a list or object is expected)") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"]
            where = f"LANDSCAPE_{str(loc[0]).upper()}" if loc else "settings"
            where += "".join(f"[{part}]" for part in loc[1:])
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        raise SpecError("; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests override via ``create_app(settings)``."""
    return Settings()
