"""The skip-vs-plain recipe: which pairs, seeds, training, surfaces and analyses a report
runs, fixed in advance and checked before any folder is made or net trained.

``ReproduceSpec()`` is the ResNet story (He et al. 2016; Li et al. 2018). The same identity
path, learned layers perturbing it instead of replacing it, recurs across depth and time, and
``family_spec`` gives each family its pairs under the same recipe: ``highway`` (Srivastava et
al. 2015), ``transformer`` (the residual stream, Vaswani et al. 2017) and ``recurrent`` (the
LSTM's cell state, Hochreiter & Schmidhuber 1997, and the GRU's update gate, Cho et al. 2014,
each against the tanh RNN). ``quick=True`` is a smaller recipe for a 2-core CPU
(docs/reproduce.md gives its times).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from landscape.errors import SpecError, UnknownNameError
from landscape.models import list_models
from landscape.specs import (
    MAX_LANCZOS_STEPS,
    DataSpec,
    DeviceName,
    GridSpec,
    Precision,
    TrainSpec,
    check_choice,
)


@dataclass(frozen=True)
class ReproduceSpec:
    """The recipe, fixed before any result is seen (docs/reproduce.md says why each value).

    Training follows He et al. 2016 §4.2 scaled to small data: SGD lr 0.1, momentum 0.9,
    weight decay 5e-4, batch 128, cosine decay; nets in ``warmup_models`` first train
    ``warmup_epochs`` at lr/10 (He et al. warm up ResNet-110 so). ``ranges`` are (half-width,
    points per axis) of square grids centred on each trained net: a close one where the plain
    net's non-convex shoulders show and a wide one where its loss climbs orders of magnitude.
    Surfaces, curvature maps and Hessian numbers are computed for the first ``surface_seeds``
    seeds (they cost far more than training); the Hessian uses the first ``hessian_samples``
    training images (a fixed subset).
    """

    pairs: tuple[tuple[str, str], ...] = (
        ("resnet20", "resnet20-noshort"),
        ("resnet56", "resnet56-noshort"),
    )
    data: DataSpec = field(default_factory=DataSpec)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_models: tuple[str, ...] = (
        "resnet56",
        "resnet56-noshort",
        "resnet110",
        "resnet110-noshort",
    )
    ranges: tuple[tuple[float, int], ...] = ((0.25, 31), (1.0, 21))
    direction_seed: int = 0
    surface_seeds: int = 1
    curvature_points: int = 3  # per axis, on the first range
    # Lanczos steps per curvature-map point (full reorthogonalization, residuals recorded):
    # a fixed budget, because on trained deep nets λmin sits next to the cluster of near-zero
    # eigenvalues and ARPACK's BE mode, run to a tolerance, took over 20 min for one 3×3 map
    # of ResNet-56 on a 2-core CPU; a large |λmin/λmax| comes from a negative outlier, which
    # a few dozen steps find (docs/reproduce.md compares the two).
    curvature_steps: int = 30
    hessian_samples: int = 256
    # λmax along training (Cohen et al. 2021, progressive sharpening): the surface seeds'
    # trainings keep a snapshot every ``epochs // sharpness_points`` epochs (and at 0 and the
    # end), each measured on the Hessian's images, warm-started; 0: none
    sharpness_points: int = 6
    top_eigenvalues: int = 3
    slq_probes: int = 3
    slq_steps: int = 40
    # Relative accuracy of each top eigenvalue (ARPACK); 1e-2 is ample for a report.
    lanczos_tol: float = 1e-2
    model_args: tuple[tuple[str, int], ...] = ()  # for every net, e.g. (("width", 16),)
    # The surfaces' precision (the engine's policy, landscape.engine.precision). Strict fp32 by
    # default, not the engine's auto (TF32 on CUDA): a plain net's loss may span 1e-6 over a
    # close range, where TF32 rounding would be what the shape metrics measure. Training,
    # Hessian products and gradient flow are strict fp32 whatever this says.
    precision: Precision = "fp32"
    device: DeviceName = "auto"
    workers: int | None = None  # surface engine processes on a CPU (None: one per core)

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, Precision)
        if not self.pairs or any(len(p) != 2 for p in self.pairs):
            raise SpecError("pairs must be (with shortcuts, without shortcuts) model names")
        known = [info.name for info in list_models()]
        for model in self.models:  # before any folder is made or net trained
            if model not in known:
                raise UnknownNameError("model", model, known)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SpecError(f"seeds must be distinct and at least one, got {self.seeds!r}")
        if not 1 <= self.surface_seeds <= len(self.seeds):
            raise SpecError(f"surface_seeds must be 1..{len(self.seeds)}, got {self.surface_seeds}")
        if not self.ranges or any(h <= 0 or n < 3 for h, n in self.ranges):
            raise SpecError(f"ranges must be (half-width > 0, points >= 3), got {self.ranges!r}")
        if self.sharpness_points < 0:
            raise SpecError(f"sharpness_points must be >= 0, got {self.sharpness_points}")
        for value, name in (
            (self.hessian_samples, "hessian_samples"),
            (self.slq_probes, "slq_probes"),
        ):
            if value < 1:
                raise SpecError(f"{name} must be >= 1, got {value}")
        for value, name in (
            (self.curvature_steps, "curvature_steps"),
            (self.slq_steps, "slq_steps"),
        ):
            if not 2 <= value <= MAX_LANCZOS_STEPS:  # Lanczos keeps steps × n_params floats
                raise SpecError(f"{name} must be 2..{MAX_LANCZOS_STEPS}, got {value}")
        for model in self.models:  # checks epochs, lr, warm-up of every net now
            self.train_spec(model, self.seeds[0])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReproduceSpec:
        """Rebuild from ``to_dict`` output (JSON lists back to tuples); unknown keys fail."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise SpecError(f"unknown ReproduceSpec field(s): {', '.join(sorted(unknown))}")
        kwargs = dict(data)
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"] = DataSpec(**kwargs["data"])
        for key in ("pairs", "ranges", "model_args"):
            if key in kwargs:
                kwargs[key] = tuple(tuple(item) for item in kwargs[key])
        for key in ("seeds", "warmup_models"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @property
    def models(self) -> tuple[str, ...]:
        """Every net once, in pair order (``rnn`` is the twin of both ``lstm`` and ``gru``)."""
        return tuple(dict.fromkeys(m for pair in self.pairs for m in pair))

    def train_spec(self, model: str, seed: int) -> TrainSpec:
        warmup = self.warmup_epochs if model in self.warmup_models else 0
        tracked = self.sharpness_points and seed in self.seeds[: self.surface_seeds]
        return TrainSpec(
            model=model,
            data=self.data,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule="cosine",
            warmup_epochs=warmup,
            seed=seed,
            device=self.device,
            model_args=dict(self.model_args),
            snapshot_every=max(1, self.epochs // self.sharpness_points) if tracked else 0,
        )

    def grid(self, half_width: float, n: int) -> GridSpec:
        return GridSpec((-half_width, half_width), n, (-half_width, half_width), n)


@dataclass(frozen=True)
class Family:
    """A family's pairs (identity path, plain twin), the nets that warm up, their arguments."""

    pairs: tuple[tuple[str, str], ...]
    warmup_models: tuple[str, ...]
    model_args: tuple[tuple[str, int], ...] = ()
    quick_epochs: int = 30


FAMILIES: dict[str, Family] = {
    "resnet": Family(ReproduceSpec.pairs, ReproduceSpec.warmup_models, quick_epochs=15),
    # FC highway nets at the paper's depths 10 and 50. The gate bias is -4 rather than the
    # model's default -2: the carry path multiplies the signal by (1 - σ(b)) per layer, which
    # over 49 layers is 0.88^49 = 0.002 at b = -2 (no identity path left; highway-50 diverged
    # for two of three seeds under this recipe) and 0.98^49 = 0.41 at b = -4.
    "highway": Family(
        (("highway-10", "highway-10-noshort"), ("highway-50", "highway-50-noshort")),
        ("highway-50", "highway-50-noshort"),
        (("gate_bias", -4),),
    ),
    "transformer": Family(
        (
            ("transformer-6", "transformer-6-noresidual"),
            ("transformer-18", "transformer-18-noresidual"),
        ),
        ("transformer-18", "transformer-18-noresidual", "transformer-18-postln"),
        quick_epochs=15,
    ),
    # one sequence length: the image's rows (8 steps on digits)
    "recurrent": Family((("lstm", "rnn"), ("gru", "rnn")), ()),
}
# The quick recipe, one for every family, sized so the ResNet story runs in under 10 minutes
# on a 2-core CPU: two seeds (still a spread), 13×13 and 9×9 grids, a 2×2 curvature map of
# 20 Lanczos steps a point, the Hessian on 64 images with 2 SLQ probes of 30 steps, λmax at 4
# points along training; epochs per family (``Family.quick_epochs``). Hessian-vector products
# dominate it: with 15×15 and 11×11 grids, 30-step map points, 128 images and 6 sharpness
# points it took 13 minutes (docs/reproduce.md).
QUICK: dict[str, Any] = {
    "seeds": (0, 1),
    "ranges": ((0.25, 13), (1.0, 9)),
    "curvature_points": 2,
    "curvature_steps": 20,
    "hessian_samples": 64,
    "slq_probes": 2,
    "slq_steps": 30,
    "sharpness_points": 4,
}


def family_spec(family: str, *, quick: bool = False, **changes: Any) -> ReproduceSpec:
    """The recipe for ``family`` (``FAMILIES``), quick or not, with ``changes`` on top;
    ``family_spec("resnet") == ReproduceSpec()``."""
    if family not in FAMILIES:
        raise UnknownNameError("family", family, list(FAMILIES))
    chosen = FAMILIES[family]
    base: dict[str, Any] = {
        "pairs": chosen.pairs,
        "warmup_models": chosen.warmup_models,
        "model_args": chosen.model_args,
    }
    if quick:
        base |= {**QUICK, "epochs": chosen.quick_epochs}
    return ReproduceSpec(**{**base, **changes})


def family_of(model: str) -> str:
    """The family a model name belongs to (its name's first part for other zoo models)."""
    if model in ("rnn", "lstm", "gru"):
        return "recurrent"
    for family in ("resnet", "highway", "transformer"):
        if model.startswith(family):
            return family
    return model.split("-")[0]
