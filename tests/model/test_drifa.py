"""DRIFA-Net: shapes, parameter count, MC dropout modes, prefix/suffix split, BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from drifa_edge.errors import ConfigError  # noqa: E402
from drifa_edge.model.config import ModelConfig, TaskSpec, dropout_shapes, paper_config  # noqa: E402
from drifa_edge.model.drifa import build_model, count_parameters  # noqa: E402
from drifa_edge.model.drifa_layout import BLOCK_LAYOUT  # noqa: E402
from drifa_edge.model.dropout import MCDropout, dropouts, set_dropout_mode  # noqa: E402

torch.set_num_threads(1)


def tiny(n_classes=(3, 4), channels=None, size=32, width=0.125, dropout=0.25) -> ModelConfig:
    channels = channels or (3,) * len(n_classes)
    tasks = tuple(
        TaskSpec(f"t{i}", tuple(f"c{j}" for j in range(k)), c)
        for i, (k, c) in enumerate(zip(n_classes, channels, strict=True))
    )
    return ModelConfig(tasks=tasks, image_size=size, width=width, dropout=dropout)


def images(cfg: ModelConfig, batch: int, seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return [torch.randn(batch, t.channels, s, s, generator=g) for t in cfg.tasks]


def model_of(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "n_classes, channels",
    [((3, 4), (3, 3)), ((2, 5, 3), (3, 1, 3)), ((2, 3, 4, 5), (1, 1, 3, 3)), ((2, 2), (1, 1))],
    ids=["2-rgb", "3-mixed", "4-mixed", "2-gray"],
)
def test_shapes(n_classes, channels):
    cfg = tiny(n_classes, channels)
    model = model_of(cfg)
    xs = images(cfg, batch=2)
    w = cfg.stage_widths
    feats = model.forward_prefix(xs)
    assert [tuple(f.shape) for f in feats] == [(2, w[0], 8, 8)] * len(n_classes)
    emb = model.forward_features(xs)
    assert emb.shape == (2, len(n_classes) * w[-1]) == (2, model.embedding_dim)
    logits = model(xs)
    assert [tuple(z.shape) for z in logits] == [(2, k) for k in n_classes]
    assert all(torch.isfinite(z).all() for z in logits)


def test_dropout_shapes_match_the_layers():
    cfg = tiny((3, 4, 2))
    model = model_of(cfg)
    seen = {}
    layers = list(dropouts(model))  # module order: branch by branch, then the final one
    hooks = [
        m.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, tuple(i[0].shape[1:])))
        for k, m in enumerate(layers)
    ]
    model(images(cfg, batch=1))
    for h in hooks:
        h.remove()
    seen = [seen[k] for k in range(len(layers))]
    assert seen == dropout_shapes(cfg)
    # 6 dropouts per branch (stages 64/128/256) + 1 after the concatenation
    assert len(seen) == 6 * 3 + 1


# ---------------------------------------------------------------- parameter count


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout  # Keras convs keep their bias


def _bn(c: int) -> int:
    return 2 * c  # gamma, beta (running stats are buffers, not parameters)


def _mfa(c: int) -> int:
    hifa = 4 * _conv(c, c, 1) + (2 * c * c + c)  # four 1x1 convs + dense(2C -> C)
    clia = 2 * _conv(c, c, 1)
    return hifa + clia + 1 + c + c  # global scale, local scale, alpha


def _rra(cin: int, cout: int, stride: int) -> int:
    n = _conv(cin, cout, 3) + _mfa(cout) + _bn(cout) + _conv(cout, cout, 3) + _mfa(cout) + _bn(cout)
    if stride != 1 or cin != cout:
        n += _conv(cin, cout, 1) + _bn(cout)
    return n


def _mifa(c: int, m: int) -> int:
    return (c * c + c) + m * _conv(c, c, 1) + 1 + c + m * c  # MGIFA dense, MLIFA convs, scales, alphas


def formula_count(cfg: ModelConfig) -> int:
    w = cfg.stage_widths
    m = len(cfg.tasks)
    total = 0
    for t in cfg.tasks:
        total += _conv(t.channels, w[0], 7) + _mfa(w[0]) + _bn(w[0])  # stem
        cin = w[0]
        for stage, stride, _drop, has_mfa in BLOCK_LAYOUT:
            total += _rra(cin, w[stage], stride) + (_mfa(w[stage]) if has_mfa else 0)
            cin = w[stage]
    total += sum(_mifa(w[stage], m) for stage, *_ in BLOCK_LAYOUT)
    total += sum((m * w[-1] + 1) * t.num_classes for t in cfg.tasks)
    return total


def test_mfa_count_by_hand():
    from drifa_edge.model.attention import MFA

    # HIFA: 4 * (64*64 + 64) + (128*64 + 64) = 16,640 + 8,256; CLIA: 2 * 4,160; scales 1 + 64 + 64
    assert count_parameters(MFA(64)) == 16_640 + 8_256 + 8_320 + 129 == 33_345


def test_paper_parameter_count():
    cfg = paper_config()
    assert formula_count(cfg) == 53_868_743
    assert count_parameters(build_model(cfg)) == 53_868_743


@pytest.mark.parametrize("n_classes, channels", [((3, 4, 5), (3, 1, 3)), ((2, 2, 2, 2), (1, 3, 1, 3))])
def test_parameter_count_other_shapes(n_classes, channels):
    cfg = tiny(n_classes, channels, width=0.25)
    assert count_parameters(build_model(cfg)) == formula_count(cfg)


# ---------------------------------------------------------------- MC dropout modes


def test_mc_mode_is_stochastic_and_off_is_deterministic():
    cfg = tiny()
    model = model_of(cfg)
    xs = images(cfg, batch=3)
    with torch.no_grad():
        set_dropout_mode(model, "mc")
        a, b = model(xs)[0], model(xs)[0]
        assert not torch.allclose(a, b)
        set_dropout_mode(model, "off")
        c, d = model(xs)[0], model(xs)[0]
        assert torch.equal(c, d)


def test_fixed_seed_repeats_the_masks():
    cfg = tiny()
    model = model_of(cfg)
    xs = images(cfg, batch=3)
    with torch.no_grad():
        set_dropout_mode(model, "mc", seed=7)
        first = [z.clone() for z in model(xs)]
        set_dropout_mode(model, "mc", seed=7)
        again = model(xs)
        set_dropout_mode(model, "mc", seed=8)
        other = model(xs)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.allclose(first[0], other[0])


def test_external_mask_matches_the_formula():
    layer = MCDropout(0.25)
    layer.mode = "external"
    x = torch.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    u = torch.tensor([0.1, 0.3, 0.25, 0.9, 0.0, 0.24, 0.5, 0.26]).reshape(1, 2, 2, 2)
    layer.uniform = u
    keep = np.array([0, 1, 1, 1, 0, 0, 1, 1], dtype=np.float32)  # u >= p keeps
    expected = np.arange(1.0, 9.0, dtype=np.float32) * keep / 0.75
    np.testing.assert_allclose(layer(x).numpy().ravel(), expected, rtol=1e-6)
    layer.uniform = torch.rand(1, 2, 2, 3)
    with pytest.raises(RuntimeError, match="uniform of shape"):
        layer(x)


def _set_external(model, uniforms):
    for layer, u in zip(dropouts(model), uniforms, strict=True):
        layer.mode, layer.uniform = "external", u


def test_prefix_plus_tiled_suffix_equals_full_forward():
    """Running the prefix once and tiling its output T times is the same function
    as running the whole model on the images tiled T times, under identical masks."""
    cfg = tiny((3, 4, 2), channels=(3, 1, 3))
    model = model_of(cfg)
    batch, T = 2, 3
    xs = images(cfg, batch)
    g = torch.Generator().manual_seed(3)
    uniforms = [torch.rand((batch * T, *s), generator=g) for s in dropout_shapes(cfg)]
    with torch.no_grad():
        _set_external(model, uniforms)
        full = model([x.repeat_interleave(T, dim=0) for x in xs])
        feats = [f.repeat_interleave(T, dim=0) for f in model.forward_prefix(xs)]
        split = model.forward_suffix(feats)
    for a, b in zip(full, split, strict=True):
        # same ops on the same numbers; only the prefix's conv batch size differs (summation order)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the masks matter: other uniforms give other logits (the test can fail)
    with torch.no_grad():
        _set_external(model, [torch.rand_like(u) for u in uniforms])
        different = model.forward_suffix(feats)
    assert not torch.allclose(different[0], split[0], atol=1e-4)


def test_mc_inference_keeps_batchnorm_statistics():
    cfg = tiny()
    model = model_of(cfg)
    xs = images(cfg, batch=4)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before
    model.eval()
    set_dropout_mode(model, "mc")
    with torch.no_grad():
        for _ in range(3):
            model(xs)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    # the check can fail: a forward in train mode does update them
    model.train()
    with torch.no_grad():
        model(xs)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_classes": (3,)}, "2 to 4 modalities"),
        ({"n_classes": (2,) * 5}, "2 to 4 modalities"),
        ({"size": 48}, "multiple of 32"),
        ({"size": 16}, "multiple of 32"),
        ({"width": 0.0}, "width"),
        ({"width": 5.0}, "width"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_model_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "a", "classes": ("x",)}, "at least 2 classes"),
        ({"name": "a", "classes": ("x", "x")}, "duplicate"),
        ({"name": "a", "classes": ("x", "y"), "channels": 2}, "channels"),
        ({"name": "bad name", "classes": ("x", "y")}, "alphanumeric"),
    ],
)
def test_task_spec_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskSpec(**kwargs)


def test_duplicate_task_names_and_unknown_keys():
    t = TaskSpec("a", ("x", "y"))
    with pytest.raises(ConfigError, match="unique"):
        ModelConfig(tasks=(t, t))
    d = tiny().to_dict()
    assert ModelConfig.from_dict(d) == tiny()
    d["depth"] = 18
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict(d)
