"""Every identity path the story names: highway nets, the Transformer's residual stream and the
recurrent cells. Each twin differs from its partner only in the identity path (module trees
compared), the counts follow from the architecture, the cells equal PyTorch's fused ones, the
nets train under the project's recipe, the engine's surface equals the naive loop, double
backward works, and each family round-trips through ONNX."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from landscape.data import load_data
from landscape.directions import model_parameters, random_direction
from landscape.engine import GridEvaluator, reference_evaluate
from landscape.models import build, list_models
from landscape.models.highway import HighwayLayer
from landscape.models.transformer import Block
from landscape.sources.model_source import plan_engine
from landscape.specs import DataSpec, EngineOptions, TrainSpec
from landscape.train import train_model

DIGITS = {"in_channels": 1, "num_classes": 10, "image_size": 8}
TWINS = {  # the net with the identity path → its plain twin
    **{f"highway-{d}": f"highway-{d}-noshort" for d in (10, 20, 50, 100)},
    **{f"transformer-{d}": f"transformer-{d}-noresidual" for d in (6, 18)},
    **{f"transformer-{d}-postln": f"transformer-{d}-noresidual" for d in (6, 18)},
    "lstm": "rnn",
    "gru": "rnn",
}
ONE_PER_FAMILY = ("highway-10", "transformer-6", "lstm", "gru")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_name_is_listed_and_names_its_twin() -> None:
    listed = {info.name: info.description for info in list_models()}
    for net, twin in TWINS.items():
        assert net in listed and twin in listed
        assert twin in listed[net] or net in listed[twin], (net, twin)


# ---------------------------------------------------------------- the twins' module trees


@pytest.mark.parametrize("depth", [10, 50])
def test_highway_twin_lacks_exactly_the_gates(depth: int) -> None:
    gated = build(f"highway-{depth}", **DIGITS, width=12)
    plain = build(f"highway-{depth}-noshort", **DIGITS, width=12)
    a, b = shapes(gated), shapes(plain)
    assert {k: v for k, v in a.items() if k in b} == b  # shared names have the same shapes
    gates = {f"layers.{i}.gate.{p}" for i in range(depth - 1) for p in ("weight", "bias")}
    assert set(a) - set(b) == gates
    assert all(a[g] == ((12, 12) if g.endswith("weight") else (12,)) for g in gates)


def test_highway_layer_carries_when_closed_and_is_plain_when_open() -> None:
    layer = HighwayLayer(6, gated=True, gate_bias=-2.0)
    plain = HighwayLayer(6, gated=False, gate_bias=-2.0)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if "gate" not in k})
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert layer.gate is not None
        t = torch.sigmoid(layer.gate(x))
        h = F.relu(layer.transform(x))
        torch.testing.assert_close(layer(x), t * h + (1 - t) * x)
        layer.gate.bias.fill_(-40.0)  # T = 0: the layer is its identity path
        torch.testing.assert_close(layer(x), x)
        layer.gate.bias.fill_(40.0)  # T = 1: the plain layer
        torch.testing.assert_close(layer(x), plain(x))
    first = build("highway-10", **DIGITS, gate_bias=-3).layers[0]
    assert torch.equal(first.gate.bias, torch.full((50,), -3.0))


@pytest.mark.parametrize("depth", [6, 18])
def test_transformer_variants_share_one_module_tree(depth: int) -> None:
    torch.manual_seed(0)
    pre = build(f"transformer-{depth}", **DIGITS)
    torch.manual_seed(0)
    none = build(f"transformer-{depth}-noresidual", **DIGITS)
    torch.manual_seed(0)
    post = build(f"transformer-{depth}-postln", **DIGITS)
    assert list(shapes(pre).items()) == list(shapes(none).items()) == list(shapes(post).items())
    for key, value in pre.state_dict().items():  # a seed gives all three the same weights
        assert torch.equal(value, none.state_dict()[key]) and torch.equal(
            value, post.state_dict()[key]
        )
    x = torch.randn(3, 1, 8, 8)
    assert not torch.allclose(pre(x), none(x)) and not torch.allclose(pre(x), post(x))


def test_transformer_blocks_differ_only_in_where_the_adds_go() -> None:
    torch.manual_seed(1)
    pre = Block(16, 4, 32, tokens=5, stream="pre")
    none, post = Block(16, 4, 32, 5, "none"), Block(16, 4, 32, 5, "post")
    none.load_state_dict(pre.state_dict())
    post.load_state_dict(pre.state_dict())
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        a = x + pre.attn(pre.norm1(x))
        torch.testing.assert_close(pre(x), a + pre.mlp(pre.norm2(a)))
        torch.testing.assert_close(none(x), pre.mlp(pre.norm2(pre.attn(pre.norm1(x)))))
        b = pre.norm1(x + pre.attn(x))
        torch.testing.assert_close(post(x), pre.norm2(b + pre.mlp(b)))


def test_attention_equals_pytorchs_multihead_attention() -> None:
    """The written-out attention is the standard one (q/k/v/out projections, scaled softmax)."""
    torch.manual_seed(2)
    block = Block(16, 4, 32, tokens=5, stream="pre")
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    attn = block.attn
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
        reference.in_proj_bias.copy_(torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]))
        reference.out_proj.weight.copy_(attn.out.weight)
        reference.out_proj.bias.copy_(attn.out.bias)
        x = torch.randn(3, 5, 16)
        torch.testing.assert_close(attn(x), reference(x, x, x, need_weights=False)[0])


def test_recurrent_twins_share_names_and_differ_in_the_gate_rows() -> None:
    nets = {kind: build(kind, **DIGITS, hidden=20) for kind in ("rnn", "lstm", "gru")}
    names = {kind: list(shapes(net)) for kind, net in nets.items()}
    assert names["rnn"] == names["lstm"] == names["gru"]
    for kind, gates in (("rnn", 1), ("gru", 3), ("lstm", 4)):
        s = shapes(nets[kind])
        assert s["cell.ih.weight"] == (gates * 20, 8) and s["cell.hh.weight"] == (gates * 20, 20)
        assert s["head.weight"] == (10, 20)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cells_equal_pytorchs_fused_recurrent_layers(kind: str) -> None:
    """Same weights in ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (gate order i,f,g,o and r,z,n): the
    same last hidden state, so the written-out cells are the textbook ones."""
    torch.manual_seed(3)
    net = build(kind, in_channels=2, num_classes=4, image_size=6, hidden=7)
    fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](12, 7, batch_first=True)
    with torch.no_grad():
        fused.weight_ih_l0.copy_(net.cell.ih.weight)
        fused.weight_hh_l0.copy_(net.cell.hh.weight)
        fused.bias_ih_l0.copy_(net.cell.ih.bias)
        fused.bias_hh_l0.copy_(net.cell.hh.bias)
        x = torch.randn(3, 2, 6, 6)
        out, _ = fused(net.sequence(x))
        torch.testing.assert_close(net(x), net.head(out[:, -1]))
    if kind == "lstm":  # forget-gate bias 1 (Gers et al. 2000), split over the two layers
        fresh = build("lstm", **DIGITS, hidden=5).cell
        torch.testing.assert_close(fresh.ih.bias[5:10] + fresh.hh.bias[5:10], torch.ones(5))


# ------------------------------------------------------------------ counts and shapes


def test_highway_counts_from_the_architecture() -> None:
    def expected(depth: int, width: int, gated: bool, features: int = 64) -> int:
        layer = (width * width + width) * (2 if gated else 1)
        return features * width + width + (depth - 1) * layer + width * 10 + 10

    for depth in (10, 50):
        for width in (50, 71):
            assert count(build(f"highway-{depth}", **DIGITS, width=width)) == expected(
                depth, width, True
            )
            assert count(build(f"highway-{depth}-noshort", **DIGITS, width=width)) == expected(
                depth, width, False
            )


@pytest.mark.parametrize(
    ("channels", "size", "patch", "tokens", "features"),
    [(1, 8, 0, 8, 8), (1, 8, 2, 16, 4), (1, 28, 0, 49, 16), (3, 32, 0, 64, 48)],
)
def test_transformer_tokens_and_counts(
    channels: int, size: int, patch: int, tokens: int, features: int
) -> None:
    model = build(
        "transformer-6", in_channels=channels, num_classes=10, image_size=size, patch=patch
    )
    assert model.tokens == tokens and model.embed.in_features == features
    m = 64
    block = 4 * (m * m + m) + (m * 4 * m + 4 * m) + (4 * m * m + m) + 4 * m
    assert count(model) == features * m + m + tokens * m + 6 * block + 2 * m + 10 * m + 10
    assert model(torch.randn(2, channels, size, size)).shape == (2, 10)
    if (channels, size) == (3, 32):  # comparable to ResNet-20 (0.27 M) and ResNet-56 (0.85 M)
        assert round(count(model) / 1e6, 2) == 0.31
        assert round(count(build("transformer-18")) / 1e6, 2) == 0.91


def test_transformer_token_order_is_row_major_patches() -> None:
    model = build("transformer-6", in_channels=1, num_classes=10, image_size=8, patch=2)
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    tokens = model.tokenize(x)
    assert tokens[0, 0].tolist() == [0, 1, 8, 9] and tokens[0, 1].tolist() == [2, 3, 10, 11]


@pytest.mark.parametrize(("kind", "gates"), [("rnn", 1), ("gru", 3), ("lstm", 4)])
def test_recurrent_counts_and_steps(kind: str, gates: int) -> None:
    for channels, size in ((1, 8), (1, 28), (3, 32)):
        model = build(kind, in_channels=channels, num_classes=10, image_size=size, hidden=16)
        assert model.steps == size and model.features == channels * size
        assert count(model) == gates * 16 * (channels * size + 16 + 2) + 16 * 10 + 10


# ------------------------------------------------------------ engine, training, Hessian


@pytest.mark.parametrize("name", [*ONE_PER_FAMILY, "transformer-6-noresidual", "rnn"])
def test_traced_and_batched_by_the_engine_without_fallbacks(name: str) -> None:
    model = build(name, **DIGITS).eval()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(fx.symbolic_trace(model)(x), model(x))  # BN folding, model keys
    data = {"train": (x, torch.zeros(4, dtype=torch.long))}
    options, fallbacks = plan_engine(model, data, EngineOptions(points_per_call=4))
    assert fallbacks == [] and options.points_per_call == 4


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_surface_matches_the_naive_loop(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, **DIGITS).eval()
    generator = torch.Generator().manual_seed(0)
    params = model_parameters(model)
    dirs = [random_direction(params, generator=generator) for _ in range(2)]
    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 10, (48,))
    data = {"train": (x, y), "test": (x[:16], y[:16])}
    coords = np.random.default_rng(1).uniform(-1, 1, size=(3, 2))
    ref = reference_evaluate(model, dirs, coords, data)
    for points in (1, 3):  # one point per call, and three batched by torch.vmap
        options = EngineOptions(workers=1, compile=False, points_per_call=points)
        with GridEvaluator(model, dirs, data, options=options) as ev:
            got = ev.evaluate(coords)
        for key in ref:
            if key.endswith("_loss"):
                np.testing.assert_allclose(got[key], ref[key], rtol=1e-5, err_msg=key)
            else:  # a sample on a decision boundary may flip under fp32 reordering
                np.testing.assert_allclose(got[key], ref[key], atol=1.01 / 16, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*ONE_PER_FAMILY, "rnn"])
def test_one_epoch_of_the_recipe_lowers_the_loss(name: str, tmp_path: Path) -> None:
    spec = TrainSpec(model=name, epochs=1, device="cpu", seed=0)
    torch.manual_seed(0)  # the initialization train_model starts from
    initial = build(name, **DIGITS)
    x, y = load_data(DataSpec(), "train")
    with torch.no_grad():
        before = float(F.cross_entropy(initial.eval()(x), y))
    meta = train_model(spec, tmp_path / "net.pt")
    assert np.isfinite(meta["train_loss"]) and meta["train_loss"] < before - 0.2, (before, meta)


def _hvp_matches_finite_differences(model: nn.Module, device: str) -> None:
    model = model.to(device).double()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64, device=device)
    y = torch.randint(0, 10, (6,), device=device)
    params = [p for p in model.parameters()]
    v = [torch.randn_like(p) for p in params]

    def grad(create_graph: bool) -> tuple[Tensor, ...]:
        loss = F.cross_entropy(model(x), y)
        return torch.autograd.grad(loss, params, create_graph=create_graph)

    g = grad(True)
    hv = torch.autograd.grad(g, params, grad_outputs=v)  # double backward
    eps = 1e-6  # central differences in float64: error ~ eps² (measured 2e-7 at 1e-6)
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(eps * d)
    plus = grad(False)
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.sub_(2 * eps * d)
    minus = grad(False)
    scale = max(float(h.abs().max()) for h in hv)
    for h, a, b in zip(hv, plus, minus, strict=True):
        torch.testing.assert_close(h, (a - b) / (2 * eps), rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("name", [*ONE_PER_FAMILY, "rnn"])
def test_double_backward_gives_the_hessian_vector_product(name: str) -> None:
    torch.manual_seed(4)
    _hvp_matches_finite_differences(build(name, **DIGITS, **_small(name)), "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("name", [*ONE_PER_FAMILY, "rnn"])
def test_double_backward_on_cuda(name: str) -> None:
    """No cuDNN RNN kernel is involved, so the Hessian works on GPUs too."""
    torch.manual_seed(4)
    _hvp_matches_finite_differences(build(name, **DIGITS, **_small(name)), "cuda")


def _small(name: str) -> dict[str, int]:
    if name.startswith("transformer"):
        return {"d_model": 16, "heads": 2}
    if name.startswith("highway"):
        return {"width": 12}
    return {"hidden": 12}


# ------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize(
    "name",
    ["highway-10", "highway-10-noshort", "transformer-6", "transformer-6-noresidual",
     "transformer-6-postln", "rnn", "lstm", "gru"],
)  # fmt: skip
def test_onnx_round_trip(name: str, tmp_path: Path) -> None:
    """Exported at opset 17 and loaded back through the upload checks. (onnx2torch 1.5 has no
    converter for the Identity-19 and Constant-19 nodes the exporter writes at its default
    opset, nor for ReduceMean-18, so opsets above 17 do not convert.)"""
    pytest.importorskip("onnx2torch")
    pytest.importorskip("onnxruntime")
    from landscape.sources.onnx_import import load_onnx_model

    torch.manual_seed(5)
    model = build(name, **DIGITS).eval()
    path = tmp_path / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model, (torch.randn(2, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
            input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    converted, report = load_onnx_model(path, sample_input_shape=(1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=1e-4, atol=1e-5)
    assert report["check"]["passed"]
