"""Models that take dict batches (``model(**batch)``, the Hugging Face convention) as modules
the engine evaluates like any other: one input tensor in, one output tensor out.

The engine cuts ``(x, y)`` into batches along dim 0, casts ``x`` to float32, runs
``model(x)``, takes per-sample losses from the outputs and ``y``, and counts a sample right
when ``outputs.argmax(dim=1) == y``. ``DictBatchModel`` fits a dict model to that contract:

- **Packing.** Each input key's per-sample values are flattened and concatenated along dim 1
  into one float32 tensor ``(N, Σ numel)``; ``forward`` slices them back, restores each
  key's shape and dtype, and calls ``model(**inputs)``. Integers below 2**24 (token ids,
  masks, labels) and float32/bf16/fp16 values pass through float32 exactly; larger integers
  and float64 inputs are refused rather than rounded.
- **Sequence classification** (labels ``(N,)``, logits ``(B, C)``): ``forward`` returns the
  logits and the labels are ``y``, so every built-in loss applies (default cross-entropy)
  and accuracy is the usual argmax.
- **Token-level** (labels ``(N, L)``, logits ``(B, L, V)``, ``-100`` ignored): ``y`` cannot
  be a ``(B, L)`` tensor (the engine's accuracy compares one class per sample), so the labels
  travel packed in ``x`` and ``forward`` reduces to per-sample values itself, returning two
  columns: ``[loss, loss ± 1]`` with ``y = 1``. The loss (``TOKEN_LOSS``/``CAUSAL_LM_LOSS``)
  reads column 0: the mean over the sample's counted tokens of the cross-entropy, with the
  causal-LM shift (logits at t predict the label at t + 1, as ``transformers``'
  ``ForCausalLMLoss``) for causal LMs. Column 1 is the larger exactly when *every* counted
  token of the sample is predicted right, so ``{split}_acc`` is the fraction of samples
  predicted right throughout (exact match): the engine counts one right-or-wrong per sample.

A surface's loss is the mean of per-sample losses; HF's batch ``.loss`` weights samples by
their counted tokens, so the two agree when every sample counts the same number of tokens.

Identity: the wrapper's ``extra_repr`` names the packing, the label handling and a sha256 of
the wrapped model's ``module_description``, so ``model_key`` (which sees the wrapper's
``forward`` source when tracing fails, as it does for HF models) covers the wrapped model's
architecture; its weights appear under the ``model.`` prefix in the ``state_dict``.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.losses import Loss

IGNORE_INDEX = -100  # transformers' label for tokens that count for nothing
LABELS = "labels"
_EXACT_INT = 2**24  # float32 holds every integer of smaller magnitude exactly

DictData = Mapping[str, Mapping[str, Tensor]]


@dataclass(frozen=True)
class Field:
    """One packed key: its name, per-sample shape and dtype (restored by ``unpack``)."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def width(self) -> int:
        return int(torch.Size(self.shape).numel())


def pack(batch: Mapping[str, Tensor], fields: tuple[Field, ...]) -> Tensor:
    """The ``fields`` of ``batch`` as one float32 tensor ``(N, Σ width)``."""
    n = len(next(iter(batch.values())))
    return torch.cat([batch[f.key].reshape(n, -1).to(torch.float32) for f in fields], dim=1)


def unpack(x: Tensor, fields: tuple[Field, ...]) -> dict[str, Tensor]:
    """``pack``'s inverse on a batch ``(B, Σ width)``: each key at its shape and dtype."""
    out, start = {}, 0
    for f in fields:
        part = x[:, start : start + f.width].reshape(x.shape[0], *f.shape)
        out[f.key] = part.to(f.dtype)
        start += f.width
    return out


def logits_of(output: Any) -> Tensor:
    """The logits of a model's output: ``.logits`` of a ModelOutput, a ``"logits"`` entry,
    the first element of a tuple (``return_dict=False``), or the tensor itself."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, tuple) and output:
        logits = output[0]
    if not isinstance(logits, Tensor):
        raise SpecError(
            f"the model returns a {type(output).__name__} without logits; return a tensor or an "
            "object with a .logits tensor"
        )
    return logits


def token_outputs(logits: Tensor, labels: Tensor, shift: bool) -> Tensor:
    """``[loss, loss ± 1]`` per sample, ``(B, 2)``, from logits ``(B, L, V)`` and labels
    ``(B, L)``: the loss is the mean cross-entropy over the sample's counted tokens; the
    second column is larger exactly when all of them are predicted right."""
    if shift:  # transformers' ForCausalLMLoss: the logits at t predict the label at t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    counted = labels != IGNORE_INDEX
    b, length, v = logits.shape
    logits = logits.float()
    nll = F.cross_entropy(
        logits.reshape(b * length, v), labels.clamp(min=0).reshape(-1), reduction="none"
    ).view(b, length)
    loss = torch.where(counted, nll, torch.zeros_like(nll)).sum(dim=1) / counted.sum(dim=1)
    right = ((logits.argmax(dim=2) == labels) | ~counted).all(dim=1)
    return torch.stack([loss, loss + torch.where(right, 1.0, -1.0)], dim=1)


def _first_column(outputs: Tensor, y: Tensor) -> Tensor:
    return outputs[:, 0]


TOKEN_LOSS = Loss(
    "python:landscape.dict_batches.token_cross_entropy",
    "per sample: mean over its counted tokens (labels ≠ -100) of −log softmax(f(x)_t)_{y_t}",
    "python",
    of_logits=_first_column,
)
CAUSAL_LM_LOSS = Loss(
    "python:landscape.dict_batches.causal_lm_cross_entropy",
    "per sample: mean over its counted tokens t ≥ 1 (labels ≠ -100) of "
    "−log softmax(f(x)_{t−1})_{y_t}, the next-token loss of transformers' ForCausalLMLoss",
    "python",
    of_logits=_first_column,
)


class DictBatchModel(nn.Module):
    """``model(**inputs)`` behind a one-tensor ``forward`` (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        fields: tuple[Field, ...],
        *,
        token_level: bool,
        shift_labels: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.fields = fields
        self.token_level = token_level
        self.shift_labels = shift_labels

    @functools.cached_property
    def wrapped_description_sha256(self) -> str:
        """sha256 of the wrapped model's ``module_description``: computed once, when a cache
        key asks (a monitor wrapping the model at every step never pays for it)."""
        from landscape.sources.modules import module_description

        return hashlib.sha256(module_description(self.model).encode()).hexdigest()

    def forward(self, x: Tensor) -> Tensor:
        inputs = unpack(x, self.fields)
        labels = inputs.pop(LABELS) if self.token_level else None
        logits = logits_of(self.model(**inputs))
        if labels is None:
            return logits
        return token_outputs(logits, labels, self.shift_labels)

    def extra_repr(self) -> str:
        packed = ", ".join(f"{f.key}{list(f.shape)}:{str(f.dtype).removeprefix('torch.')}"
                           for f in self.fields)  # fmt: skip
        return (
            f"packed=[{packed}], token_level={self.token_level}, "
            f"shift_labels={self.shift_labels}, "
            f"wrapped_description_sha256={self.wrapped_description_sha256}"
        )


@dataclass
class Adapted:
    """What ``adapt`` returns: the wrapper, its ``(x, y)`` splits and the loss it implies."""

    model: DictBatchModel
    data: dict[str, tuple[Tensor, Tensor]]
    loss: Loss | None  # None: the logits are the model's own, any loss applies


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` predicts the next token: ``config.is_decoder``, a class named
    ``…ForCausalLM``, or one ``transformers`` lists as a causal LM (``GPT2LMHeadModel``)."""
    name = type(model).__name__
    if bool(getattr(getattr(model, "config", None), "is_decoder", False)):
        return True
    if name.endswith("ForCausalLM"):
        return True
    if "transformers" in sys.modules and type(model).__module__.startswith("transformers"):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return False


def is_dict_data(data: Mapping[str, Any]) -> bool:
    """Whether ``data``'s splits are dicts of tensors (else ``(x, y)`` pairs)."""
    return any(isinstance(split, Mapping) for split in data.values())


def adapt(
    model: nn.Module,
    data: Mapping[str, Any],
    *,
    shift_labels: bool | None = None,
    label_key: str = LABELS,
) -> Adapted:
    """``model`` and dict splits (split → ``{key: (N, ...)}``, labels under ``label_key``) as
    a ``DictBatchModel`` and ``(x, y)`` splits. ``shift_labels`` None: shift for causal LMs
    (``is_causal_lm``). SpecError names the key or split at fault."""
    if not all(isinstance(split, Mapping) for split in data.values()):
        raise SpecError("give every split as a dict of tensors, or every split as (x, y)")
    splits = {name: checked_split(name, split, label_key) for name, split in data.items()}
    first_name, first = next(iter(splits.items()))
    labels = first[label_key]
    token_level = labels.dim() == 2 and not labels.is_floating_point()
    if labels.dim() != 1 and not token_level and not labels.is_floating_point():
        raise SpecError(
            f"{first_name}: {label_key!r} has shape {tuple(labels.shape)}; class labels are "
            "(N,) per sample or (N, L) per token"
        )
    keys = [k for k in first if k != label_key] + ([label_key] if token_level else [])
    fields = fields_of(first, keys)
    for name, split in splits.items():
        if set(split) != set(first) or fields_of(split, keys) != fields:
            raise SpecError(
                f"split {name!r} has keys/shapes {_describe(split)}, split {first_name!r} "
                f"{_describe(first)}: every split needs the same keys, per-sample shapes and dtypes"
            )
    shift = is_causal_lm(model) if shift_labels is None else shift_labels
    wrapper = DictBatchModel(model, fields, token_level=token_level, shift_labels=shift)
    tensors = {}
    for name, split in splits.items():
        x = pack(split, fields)
        if token_level:
            _check_counted(name, split[label_key], shift, label_key)
            y = torch.ones(len(x), dtype=torch.int64)
        else:
            y = split[label_key]
        tensors[name] = (x, y)
    if token_level:
        _check_vocabulary(wrapper, first, label_key)
    loss = (CAUSAL_LM_LOSS if shift else TOKEN_LOSS) if token_level else None
    return Adapted(wrapper, tensors, loss)


def fields_of(split: Mapping[str, Tensor], keys: list[str]) -> tuple[Field, ...]:
    """The packing of ``keys`` of ``split``: each key's per-sample shape and dtype."""
    return tuple(Field(k, tuple(split[k].shape[1:]), split[k].dtype) for k in keys)


def checked_split(name: str, split: Mapping[str, Any], label_key: str) -> dict[str, Tensor]:
    """The split's tensors, detached on the CPU, after the checks that packing needs."""
    bad = [k for k, t in split.items() if not isinstance(t, Tensor)]
    if bad:
        raise SpecError(f"split {name!r}: {bad} are not tensors")
    if label_key not in split:
        raise SpecError(f"split {name!r} has no {label_key!r} (keys: {sorted(split)})")
    if len(split) < 2:
        raise SpecError(f"split {name!r} has only {label_key!r}: the model needs inputs")
    tensors = {str(k): t.detach().cpu() for k, t in split.items()}
    lengths = {k: (int(t.shape[0]) if t.dim() else None) for k, t in tensors.items()}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise SpecError(
            f"split {name!r}: every tensor needs the same number of samples along dim 0, got "
            + ", ".join(f"{k}: {n}" for k, n in lengths.items())
        )
    for k, t in tensors.items():
        if t.dtype == torch.float64 and k != label_key:
            raise SpecError(f"split {name!r}: {k!r} is float64; pass float32 (packed exactly)")
        if t.is_complex():
            raise SpecError(f"split {name!r}: {k!r} is complex; inputs are real or integer")
        if not t.is_floating_point() and t.numel() and int(t.abs().max()) >= _EXACT_INT:
            raise SpecError(
                f"split {name!r}: {k!r} holds integers of magnitude ≥ 2**24, which the "
                "engine's float32 inputs cannot carry exactly"
            )
    return tensors


def _check_counted(name: str, labels: Tensor, shift: bool, label_key: str) -> None:
    counted = (labels[:, 1:] if shift else labels) != IGNORE_INDEX
    empty = (~counted.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise SpecError(
            f"split {name!r}: samples {empty[:5].tolist()} count no token of {label_key!r} "
            f"(all -100{' after the causal shift' if shift else ''}): their loss is undefined"
        )


def _check_vocabulary(wrapper: DictBatchModel, split: Mapping[str, Tensor], key: str) -> None:
    """Labels beyond the logits' last dimension would fail deep in the engine: say so here."""
    inputs = {k: t[:1] for k, t in split.items() if k != key}
    try:
        with torch.inference_mode():
            vocabulary = logits_of(wrapper.model.eval()(**inputs)).shape[-1]
    except Exception as exc:
        raise SpecError(
            f"the model does not accept {sorted(inputs)}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    top = int(split[key].max())
    if top >= vocabulary:
        raise SpecError(f"{key!r} holds token {top}, beyond the model's {vocabulary} logits")


def _describe(split: Mapping[str, Tensor]) -> str:
    return "{" + ", ".join(f"{k}: {tuple(t.shape[1:])} {t.dtype}" for k, t in split.items()) + "}"
