"""The losses a surface is evaluated with and a model trained with: built-ins, installed
plugins (the ``landscape.losses`` entry-point group) and Python callables.

A user's loss is ``loss(model, inputs, targets) -> Tensor`` of **per-sample** losses, shape
``(B,)``. Per-sample, not a batch mean: the engine cuts a split into batches of its own size,
pads the last one and masks the padding out of a float64 sum, so only per-sample values give
the same mean whatever the batching (a mean would count the padding, and a mean times the
batch size would need to be told which samples are real). ``model`` holds the weights of the
point being evaluated, so a regularizer over ``model.parameters()`` sees ``θ + xδ + yη``.

A loss's ``name`` is its identity: it is the spec's ``loss`` field, so it enters the cache
key, the file's ``spec`` and the resume check. Built-ins and plugins are named by their
registry name; a Python callable by ``python:<module>.<qualname>@<hash>`` -- the hash (12 hex
digits of sha256) covers its source text (bytecode where there is no source), its defaults,
the simple values (numbers, strings) its closure holds and a ``functools.partial``'s
arguments -- or by ``python:<name>`` when ``custom_loss(fn, name=...)`` names it. Callables
resolved here are remembered for this process, so a spec naming one (training, a resume)
finds it again.

A plugin declares ``[project.entry-points."landscape.losses"] my-loss = "pkg.mod:fn"``; the
entry point's name is the loss name and ``fn``'s docstring's first paragraph its listed
formula. Plugins are trusted code the operator installed; a broken one is skipped with a
warning. The service accepts only registered names (``get_loss`` refuses ``python:`` names
it has not been handed in-process), so it never runs code a client sends.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import marshal
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError, UnknownNameError

log = logging.getLogger(__name__)

GROUP = "landscape.losses"
PYTHON_PREFIX = "python:"

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (model, inputs, targets) -> (B,)
LogitsLossFn = Callable[[Tensor, Tensor], Tensor]  # (logits, targets) -> (B,)


@dataclass(frozen=True)
class Loss:
    """One loss. Exactly one of ``of_logits`` (a function of the outputs alone: the engine may
    fold BN and compile it) and ``of_model`` (sees the model at the point's weights) is set.
    Plain module-level functions and partials only: it travels to worker processes."""

    name: str  # the identity: the spec's ``loss`` field
    formula: str
    source: str  # "builtin", "plugin <distribution> <version>" or "python"
    of_logits: LogitsLossFn | None = None
    of_model: LossFn | None = None

    def __post_init__(self) -> None:
        assert (self.of_logits is None) != (self.of_model is None), "one loss function"

    @property
    def sees_model(self) -> bool:
        return self.of_model is not None


# --------------------------------------------------------------------------- built-ins


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _mse_softmax(logits: Tensor, y: Tensor) -> Tensor:
    # Li et al. 2018's code (``--loss_name mse``): softmax probabilities against one-hot
    probs = logits.softmax(dim=1)
    return (probs - F.one_hot(y, logits.shape[1]).to(probs.dtype)).pow(2).mean(dim=1)


def _mse_onehot(logits: Tensor, y: Tensor) -> Tensor:
    # Cohen et al. 2021's square loss: the raw outputs against one-hot, no softmax
    return (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).pow(2).mean(dim=1)


def _cohen_square(logits: Tensor, y: Tensor) -> Tensor:
    # Cohen et al. 2021's square loss as their code writes it: ½ Σ_c, C/2 times mse_onehot
    return 0.5 * (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).pow(2).sum(dim=1)


def _label_smoothing(logits: Tensor, y: Tensor, *, epsilon: float) -> Tensor:
    # Szegedy et al. 2016, §7: q = (1 − ε)·onehot(y) + ε/C
    return F.cross_entropy(logits, y, reduction="none", label_smoothing=epsilon)


def _cross_entropy_l2(model: nn.Module, x: Tensor, y: Tensor, *, lam: float) -> Tensor:
    # weight decay as a loss term, at the weights the model holds (the grid point's)
    outputs = model(x)
    norm_sq = sum(p.float().pow(2).sum() for p in model.parameters())
    return F.cross_entropy(outputs.float(), y, reduction="none") + 0.5 * lam * norm_sq


_FIXED = {
    "cross_entropy": Loss(
        "cross_entropy", "−log softmax(f(x))_y", "builtin", of_logits=_cross_entropy
    ),
    "mse": Loss(
        "mse",
        "(1/C) Σ_c (softmax(f(x))_c − onehot(y)_c)² — on probabilities, as Li et al. 2018's "
        "code; for regression heads: the mean squared error",
        "builtin",
        of_logits=_mse_softmax,
    ),
    "mse_onehot": Loss(
        "mse_onehot",
        "(1/C) Σ_c (f(x)_c − onehot(y)_c)² — on the raw outputs (Cohen et al. 2021's square "
        "loss, averaged over classes instead of their ½ Σ_c)",
        "builtin",
        of_logits=_mse_onehot,
    ),
    "cohen_square": Loss(
        "cohen_square",
        "½ Σ_c (f(x)_c − onehot(y)_c)² — Cohen et al. 2021's square loss as published (C/2 "
        "times mse_onehot): their step sizes reproduce their edge of stability",
        "builtin",
        of_logits=_cohen_square,
    ),
}
# Families with their parameter in the name; the listing shows each with its default.
_LABEL_SMOOTHING = "label_smoothing_"
_L2 = "cross_entropy_l2_"
_FAMILY_DEFAULTS = {_LABEL_SMOOTHING: 0.1, _L2: 5e-4}
_NUMBER = re.compile(r"^[0-9]*\.?[0-9]+(e[+-]?[0-9]+)?$", re.IGNORECASE)


def _family(name: str) -> Loss | None:
    """``label_smoothing_<ε>`` (0 ≤ ε < 1) or ``cross_entropy_l2_<λ>`` (λ ≥ 0), or None."""
    for prefix in _FAMILY_DEFAULTS:
        if name.startswith(prefix):
            text = name[len(prefix) :]
            if not _NUMBER.match(text):
                raise SpecError(f"loss {name!r}: {text!r} after {prefix!r} is not a number")
            value = float(text)
            canonical = f"{prefix}{value!r}"
            if canonical != name:
                raise SpecError(f"loss {name!r}: write it {canonical!r} (one name per loss)")
            if prefix == _LABEL_SMOOTHING:
                if not value < 1:
                    raise SpecError(f"loss {name!r}: label smoothing needs 0 ≤ ε < 1")
                return Loss(
                    name,
                    f"−Σ_c q_c log softmax(f(x))_c, q = (1 − ε)·onehot(y) + ε/C, ε = {value!r}",
                    "builtin",
                    of_logits=functools.partial(_label_smoothing, epsilon=value),
                )
            return Loss(
                name,
                f"−log softmax(f(x))_y + (λ/2)‖θ + xδ + yη‖², λ = {value!r}, over every "
                "parameter at the grid point's weights",
                "builtin",
                of_model=functools.partial(_cross_entropy_l2, lam=value),
            )
    return None


def builtin_names() -> list[str]:
    """The built-ins as listed: the fixed names, then each family at its default."""
    return [*_FIXED, *(f"{prefix}{value!r}" for prefix, value in _FAMILY_DEFAULTS.items())]


# --------------------------------------------------------------------------- registry

_IN_PROCESS: dict[str, Loss] = {}  # Python callables resolved in this process, by identity


@functools.cache
def _plugins() -> dict[str, Loss]:
    return {loss.name: loss for loss in discover(builtin_names())}


def list_losses() -> list[Loss]:
    """Built-ins and installed plugins, the losses a request to the service may name."""
    return [get_loss(n) for n in builtin_names()] + list(_plugins().values())


def get_loss(name: str) -> Loss:
    """The loss a spec's ``loss`` names; UnknownNameError lists the registered ones."""
    if name in _FIXED:
        return _FIXED[name]
    if name in _IN_PROCESS:
        return _IN_PROCESS[name]
    if name.startswith(PYTHON_PREFIX):
        raise SpecError(
            f"loss {name!r} is a Python callable not given in this process: pass it again "
            "(loss=fn, or --loss-factory MODULE:CALLABLE)"
        )
    family = _family(name)
    if family is not None:
        return family
    plugins = _plugins()
    if name in plugins:
        return plugins[name]
    raise UnknownNameError(
        "loss", name, [*builtin_names(), "label_smoothing_<ε>", "cross_entropy_l2_<λ>", *plugins]
    )


def resolve_loss(loss: str | Loss | LossFn) -> Loss:
    """A name, a ``Loss`` or a ``loss(model, inputs, targets)`` callable, as a ``Loss``."""
    if isinstance(loss, Loss):
        if loss.source == "python":
            _IN_PROCESS.setdefault(loss.name, loss)
        return loss
    if isinstance(loss, str):
        return get_loss(loss)
    if callable(loss):
        return custom_loss(loss)
    raise SpecError(f"loss must be a name or a callable, got a {type(loss).__name__}")


def custom_loss(fn: LossFn, *, name: str | None = None, formula: str | None = None) -> Loss:
    """A Python callable ``fn(model, inputs, targets) -> (B,)`` as a ``Loss`` named
    ``python:<name>``, or by its qualified name and a hash of its code (module docstring)."""
    if not callable(fn):
        raise SpecError(f"a custom loss must be callable, got a {type(fn).__name__}")
    if name is not None and not name.strip():
        raise SpecError("a custom loss's name must not be empty")
    identity = PYTHON_PREFIX + (name or f"{_qualified_name(fn)}@{_fingerprint(fn)[:12]}")
    loss = Loss(identity, formula or _description(fn, identity), "python", of_model=fn)
    _IN_PROCESS[identity] = loss
    return loss


def load_loss_factory(spec: str) -> Loss:
    """``--loss-factory package.module:callable``: the callable is the loss itself, resolved
    by the rules (and with the messages) of ``--model-factory``."""
    from landscape.sources.factory import load_factory

    fn = load_factory(spec, option="--loss-factory", returns="per-sample losses")
    return custom_loss(fn)


def _qualified_name(fn: Callable[..., Any]) -> str:
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{qualname}"


def _fingerprint(fn: Callable[..., Any]) -> str:
    """sha256 of what makes ``fn`` compute what it does (see the module docstring)."""
    digest = hashlib.sha256()
    if isinstance(fn, functools.partial):
        digest.update(_fingerprint(fn.func).encode())
        digest.update(repr((fn.args, sorted(fn.keywords.items()))).encode())
        return digest.hexdigest()
    code_owner = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn).__call__
    try:
        digest.update(inspect.getsource(code_owner).encode())
    except (OSError, TypeError):
        code = getattr(code_owner, "__code__", None)
        digest.update(marshal.dumps(code) if code is not None else repr(code_owner).encode())
    digest.update(repr(getattr(fn, "__defaults__", None)).encode())
    digest.update(repr(getattr(fn, "__kwdefaults__", None)).encode())
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, (int, float, str, bool, tuple)):
            digest.update(repr(value).encode())
    return digest.hexdigest()


def _description(fn: Callable[..., Any], name: str) -> str:
    doc = inspect.getdoc(fn)
    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip() if doc else ""
    return first or f"{name} (no docstring)"


# --------------------------------------------------------------------------- plugins


def discover(taken: list[str], entry_points: list[metadata.EntryPoint] | None = None) -> list[Loss]:
    """Load every ``landscape.losses`` entry point; names in ``taken`` (built-ins) or of a
    family are refused, as a broken or non-callable object is: each with a warning."""
    from landscape.models.plugins import _source

    found = metadata.entry_points(group=GROUP) if entry_points is None else entry_points
    names = set(taken)
    losses: list[Loss] = []
    for ep in sorted(found, key=lambda e: e.name):
        source = _source(ep)
        if ep.name in names or ep.name.startswith((*_FAMILY_DEFAULTS, PYTHON_PREFIX)):
            log.warning("loss plugin %r from %s refused: the name is taken", ep.name, source)
            continue
        try:
            fn = ep.load()
        except Exception as exc:  # a broken plugin must not break the listing
            log.warning("loss plugin %r from %s skipped: %s: %s", ep.name, source,
                        type(exc).__name__, exc)  # fmt: skip
            continue
        if not callable(fn):
            log.warning("loss plugin %r from %s skipped: %s is a %s, not a loss function",
                        ep.name, source, ep.value, type(fn).__name__)  # fmt: skip
            continue
        losses.append(Loss(ep.name, _description(fn, ep.name), source, of_model=fn))
        names.add(ep.name)
    return losses


# --------------------------------------------------------------------------- computing


def losses_and_outputs(loss: Loss, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample losses ``(B,)`` (float32 or wider) and the model's outputs on ``x`` (for
    accuracy), in one forward pass: a loss that sees the model has its own call on ``x``
    recorded, and only a loss that never makes one costs a second pass."""
    if loss.of_logits is not None:
        outputs: Tensor = model(x)
        return _checked(loss, loss.of_logits(outputs.float(), y), x), outputs
    assert loss.of_model is not None
    seen: list[Tensor] = []

    def record(_: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if not seen and args and args[0] is x:
            seen.append(output)

    handle = model.register_forward_hook(record)
    try:
        per = loss.of_model(model, x, y)
    finally:
        handle.remove()
    return _checked(loss, per, x), seen[0] if seen else model(x)


def mean_loss(loss: Loss, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The batch's mean loss (what training differentiates) and the outputs, for accuracy."""
    per, outputs = losses_and_outputs(loss, model, x, y)
    return per.mean(), outputs


def _checked(loss: Loss, per: Any, x: Tensor) -> Tensor:
    """``per`` as a float tensor of shape ``(B,)``; the error says why a mean is refused."""
    if not isinstance(per, Tensor):
        raise SpecError(f"loss {loss.name!r} returned a {type(per).__name__}, not a tensor")
    if per.shape != (x.shape[0],):
        raise SpecError(
            f"loss {loss.name!r} returned shape {tuple(per.shape)} for a batch of "
            f"{x.shape[0]}: return per-sample losses, shape ({x.shape[0]},) (a mean cannot be "
            "summed exactly over the engine's padded batches)"
        )
    return per if per.dtype in (torch.float32, torch.float64) else per.float()
