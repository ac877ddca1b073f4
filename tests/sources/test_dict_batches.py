"""Dict-batch models (``model(**batch)``): the stored surface against a hand-written loop that
sets θ + xδ + yη itself, calls the transformers model on the dict and takes the loss per
sample by hand, and against the model's own ``.loss`` where every sample counts alike."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import storage as store
from landscape.analysis.sharpness import SharpnessOptions
from landscape.errors import SpecError
from landscape.sources.dict_batches import (
    DictBatchModel,
    adapt,
    fields_of,
    is_causal_lm,
    pack,
    unpack,
)
from landscape.sources.modules import model_key
from landscape.specs import EngineOptions, GridSpec
from landscape.surface import compute_module_surface

transformers = pytest.importorskip("transformers")

CPU = EngineOptions(device="cpu", workers=1, compile=False)
GRID = GridSpec(x_range=(-1.0, 1.0), n_x=3, y_range=(-1.0, 1.0), n_y=3)
VOCAB, LENGTH = 50, 8

Batch = dict[str, Tensor]


def bert_classifier(attention: str = "sdpa") -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
        attn_implementation=attention,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config).eval()


def gpt2_lm() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


def tokens(n: int, seed: int, *, ragged: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    mask = torch.ones(n, LENGTH, dtype=torch.int64)
    if ragged:  # padded on the right, to lengths 3..LENGTH
        lengths = torch.randint(3, LENGTH + 1, (n,), generator=g)
        mask = (torch.arange(LENGTH) < lengths[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask}


def at_point(model: nn.Module, path: Path, a: float, b: float) -> nn.Module:
    """A copy of ``model`` at θ + aδ + bη, the directions read from the file (keyed by the
    wrapper's names: the model's own under ``model.``)."""
    dx, dy = store.read_directions(path)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(a * dx[f"model.{name}"] + b * dy[f"model.{name}"])
    return moved


def hand_loop(
    path: Path, model: nn.Module, data: dict[str, Batch], per_sample: Callable[..., Tensor]
) -> dict[str, np.ndarray]:
    """Each metric at each grid point, (n_y, n_x), one ``model(**inputs)`` per point."""
    surface = store.read_surface(path)
    assert surface.y is not None
    out = {f"{s}_{m}": np.zeros((len(surface.y), len(surface.x))) for s in data for m in "la"}
    for j, b in enumerate(surface.y):
        for i, a in enumerate(surface.x):
            moved = at_point(model, path, float(a), float(b))
            for split, batch in data.items():
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                with torch.no_grad():
                    logits = moved(**inputs).logits
                loss, right = per_sample(logits, batch["labels"])
                out[f"{split}_l"][j, i] = loss.double().mean().item()
                out[f"{split}_a"][j, i] = right.double().mean().item()
    return out


def classifier_per_sample(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    return F.cross_entropy(logits, labels, reduction="none"), logits.argmax(1) == labels


def causal_per_sample(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Token t's logits predict label t + 1; -100 counts for nothing; right: every token."""
    losses, rights = [], []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        pred, target = row_logits[:-1], row_labels[1:]
        keep = target != -100
        losses.append(F.cross_entropy(pred[keep], target[keep]))
        rights.append(bool((pred[keep].argmax(1) == target[keep]).all()))
    return torch.stack(losses), torch.tensor(rights)


def assert_matches(path: Path, expected: dict[str, np.ndarray], splits: list[str]) -> None:
    values = store.read_surface(path).values
    for split in splits:
        np.testing.assert_allclose(values[f"{split}_loss"], expected[f"{split}_l"], atol=1e-5)
        np.testing.assert_allclose(values[f"{split}_acc"], expected[f"{split}_a"], atol=1e-12)


@pytest.mark.slow  # about 5 s: nine points of a transformers model
def test_sequence_classifier_surface_equals_the_hand_loop_and_hf_loss(tmp_path: Path) -> None:
    model = bert_classifier()
    data = {
        split: {**tokens(n, seed, ragged=True), "labels": torch.randint(0, 3, (n,))}
        for split, n, seed in (("train", 24, 1), ("test", 12, 2))
    }
    out = compute_module_surface(model, data, tmp_path / "s.h5", grid=GRID, options=CPU)
    expected = hand_loop(out, model, data, classifier_per_sample)
    assert_matches(out, expected, ["train", "test"])
    with torch.no_grad():  # one label per sample: the per-sample mean is HF's batch loss
        hf = model(**data["train"]).loss.item()
    assert store.read_surface(out).values["train_loss"][1, 1] == pytest.approx(hf, abs=1e-5)
    surface = store.read_surface(out)
    assert surface.attrs["model"] == "BertForSequenceClassification"
    assert surface.attrs["loss_formula"].startswith("−log softmax")
    assert any(n.startswith("model.bert.") for n in store.read_directions(out)[0])


@pytest.mark.slow  # about 5 s: nine points of a transformers model
def test_causal_lm_surface_equals_the_hand_loop_and_hf_loss(tmp_path: Path) -> None:
    model = gpt2_lm()
    batch = tokens(16, 3, ragged=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    data = {"train": {**batch, "labels": labels}}
    out = compute_module_surface(model, data, tmp_path / "s.h5", grid=GRID, options=CPU)
    assert_matches(out, hand_loop(out, model, data, causal_per_sample), ["train"])
    surface = store.read_surface(out)
    assert surface.spec.loss == "python:landscape.dict_batches.causal_lm_cross_entropy"

    # equal-length samples: the mean of per-sample losses is HF's token-weighted .loss
    full = tokens(16, 4)
    equal = {"train": {**full, "labels": full["input_ids"].clone()}}
    out2 = compute_module_surface(model, equal, tmp_path / "e.h5", grid=GRID, options=CPU)
    with torch.no_grad():
        hf = model(**equal["train"]).loss.item()
    assert store.read_surface(out2).values["train_loss"][1, 1] == pytest.approx(hf, abs=1e-5)


def test_causal_shift_is_detected_and_can_be_overridden() -> None:
    lm, classifier = gpt2_lm(), bert_classifier()
    assert is_causal_lm(lm) and not is_causal_lm(classifier)
    batch = tokens(4, 5)
    data = {"train": {**batch, "labels": batch["input_ids"]}}
    assert adapt(lm, data).model.shift_labels
    unshifted = adapt(lm, data, shift_labels=False)
    assert not unshifted.model.shift_labels
    assert unshifted.loss is not None
    assert unshifted.loss.name == "python:landscape.dict_batches.token_cross_entropy"
    # the identity covers the wrapped model and the shift
    assert model_key(adapt(lm, data).model) != model_key(unshifted.model)


def test_packing_keeps_token_ids_exact_and_the_key_covers_the_wrapped_model() -> None:
    model = bert_classifier()
    batch = {**tokens(6, 6), "labels": torch.randint(0, 3, (6,))}
    adapted = adapt(model, {"train": batch})
    wrapper = adapted.model
    assert isinstance(wrapper, DictBatchModel)
    x, y = adapted.data["train"]
    restored = unpack(x, wrapper.fields)
    assert restored["input_ids"].dtype == torch.int64
    assert torch.equal(restored["input_ids"], batch["input_ids"])
    assert torch.equal(y, batch["labels"])
    other = bert_classifier()
    other.config.hidden_act = "relu"  # same weights, another forward
    for layer in other.modules():
        if hasattr(layer, "intermediate_act_fn"):
            layer.intermediate_act_fn = nn.ReLU()
    assert model_key(adapt(other, {"train": batch}).model) != model_key(wrapper)


def test_mixed_integer_and_float_inputs_round_trip_exactly() -> None:
    g = torch.Generator().manual_seed(10)
    batch = {
        "input_ids": torch.randint(0, 2**24 - 1, (5, 3), generator=g),
        "pixel_values": torch.randn(5, 2, 2, generator=g),
        "scale": torch.randn(5, generator=g).to(torch.bfloat16),
        "keep": torch.rand(5, 3, generator=g) > 0.5,
    }
    fields = fields_of(batch, list(batch))
    restored = unpack(pack(batch, fields), fields)
    for key, value in batch.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key


def test_splits_of_both_kinds_are_refused() -> None:
    batch = {**tokens(4, 11), "labels": torch.randint(0, 3, (4,))}
    pair = (torch.zeros(4, LENGTH), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(SpecError, match="every split as a dict"):
        adapt(bert_classifier(), {"train": batch, "test": pair})


def test_mismatched_lengths_name_the_keys() -> None:
    batch = {**tokens(8, 7), "labels": torch.randint(0, 3, (6,))}
    with pytest.raises(SpecError, match=r"input_ids: 8, attention_mask: 8, labels: 6"):
        adapt(bert_classifier(), {"train": batch})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("labels"), "no 'labels'"),
        (lambda b: b.update(input_ids=b["input_ids"] + 2**24), "2\\*\\*24"),
        (lambda b: b.update(embeds=torch.zeros(4, 2, dtype=torch.float64)), "float64"),
        (lambda b: b.update(labels=torch.full((4, LENGTH), -100)), "count no token"),
        (lambda b: b.update(labels=torch.full((4, LENGTH), VOCAB)), "beyond the model's 50"),
    ],
)
def test_bad_dict_batches_are_refused_clearly(
    change: Callable[[Batch], object], message: str
) -> None:
    batch = {**tokens(4, 8), "labels": torch.randint(0, VOCAB, (4, LENGTH))}
    change(batch)
    with pytest.raises(SpecError, match=message):
        adapt(gpt2_lm(), {"train": batch})


@pytest.mark.slow  # about 15 s: transformers' import and two 5×5 surfaces in a new process
def test_the_docs_example_runs_as_written(tmp_path: Path) -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "models.md"
    found = re.search(
        r"## Models that take dict batches\n.*?```python\n(.*?)```", docs.read_text(), re.S
    )
    assert found is not None, "docs/models.md has no dict-batch example"
    (tmp_path / "example.py").write_text(found.group(1))
    done = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name, model in (
        ("bert.h5", "BertForSequenceClassification"),
        ("gpt2.h5", "GPT2LMHeadModel"),
    ):
        surface = store.read_surface(tmp_path / name)
        assert surface.status == "complete" and surface.attrs["model"] == model
        assert np.isfinite(surface.values["train_loss"]).all()


SHARP = SharpnessOptions(krylov=6, tol=1e-3)


@pytest.mark.slow  # about 40 Hessian-vector products through BERT
def test_monitor_takes_a_dict_batch_classifier() -> None:
    """The monitor's loss is the model's own ``.loss`` on the dict; λmax is the one measured
    through the existing ``forward=`` route on the same tokens; the weights are untouched."""
    from landscape.monitor import Monitor

    model = bert_classifier("eager")  # Hessian products: CPU sdpa has no double backward
    batch = {**tokens(8, 9, ragged=True), "labels": torch.randint(0, 3, (8,))}
    before = copy.deepcopy(model.state_dict())
    result = Monitor(model, batch, every=1, measure=("lambda_max",), sharpness=SHARP).step(None, 0)
    assert result is not None and result.lambda_max is not None
    with torch.no_grad():
        assert result.loss == pytest.approx(model(**batch).loss.item(), abs=1e-5)
    pairs = (torch.cat([batch["input_ids"], batch["attention_mask"]], dim=1), batch["labels"])

    def forward(m: nn.Module, x: Tensor) -> Tensor:
        ids, mask = x[:, :LENGTH].long(), x[:, LENGTH:].long()
        logits: Tensor = m(input_ids=ids, attention_mask=mask).logits
        return logits

    reference = Monitor(
        model, pairs, every=1, measure=("lambda_max",), sharpness=SHARP, forward=forward
    )
    expected = reference.step(None, 0)
    assert expected is not None and expected.lambda_max is not None
    assert result.lambda_max == pytest.approx(expected.lambda_max, rel=1e-3)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    with pytest.raises(SpecError, match="one label per sample"):
        Monitor(model, {**batch, "labels": batch["input_ids"]})
