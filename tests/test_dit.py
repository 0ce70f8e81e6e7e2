"""The diffusion transformer: shapes, zero init, per-frame timesteps, text masking, attention dispatch."""

import pytest
import torch

from sora_core import attention as attn
from sora_core.config import preset
from sora_core.dit import DiT, forward_flops, parameter_count

from .conftest import perturbed


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return perturbed(DiT(preset("micro").dit)).eval()


def inputs(b=1, t=3, h=4, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, t, h, w, generator=g)
    time = torch.rand(b, t, generator=g)
    text = torch.randn(b, 5, 24, generator=g)
    mask = torch.ones(b, 5, dtype=torch.bool)
    return x, time, text, mask


def test_a_fresh_dit_predicts_zero_velocity():
    torch.manual_seed(0)
    fresh = DiT(preset("micro").dit)
    assert torch.equal(fresh(*inputs()), torch.zeros(1, 4, 3, 4, 6))


@pytest.mark.parametrize("t,h,w", [(1, 2, 2), (3, 4, 6), (5, 8, 2)])
@torch.no_grad()
def test_output_has_the_input_shape_for_any_grid(dit, t, h, w):
    x, time, text, mask = inputs(2, t, h, w)
    out = dit(x, time, text, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


@torch.no_grad()
def test_the_same_input_gives_the_same_output(dit):
    assert torch.equal(dit(*inputs()), dit(*inputs()))


@torch.no_grad()
def test_timesteps_are_per_latent_frame(dit):
    x, time, text, mask = inputs()
    other = time.clone()
    other[0, 1] = 0.0
    a, b = dit(x, time, text, mask), dit(x, other, text, mask)
    assert not torch.allclose(a, b)


def test_timesteps_must_have_one_value_per_latent_frame(dit):
    x, time, text, mask = inputs()
    with pytest.raises(ValueError, match="per latent frame"):
        dit(x, time[:, :1], text, mask)


@torch.no_grad()
def test_padded_text_tokens_are_ignored(dit):
    x, time, text, mask = inputs()
    padded = torch.cat([text, torch.randn(1, 3, 24)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(dit(x, time, text, mask), dit(x, time, padded, pmask), atol=1e-5)


@torch.no_grad()
def test_the_text_changes_the_prediction(dit):
    x, time, text, mask = inputs()
    assert not torch.allclose(dit(x, time, text, mask), dit(x, time, -text, mask))


def test_sdpa_dispatch_matches_explicit_attention_math():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True] * 5 + [False] * 2, [True] * 7])
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    expected = scores.softmax(-1) @ v
    assert torch.allclose(attn.attention(q, k, v, mask), expected, atol=1e-5)


@pytest.mark.skipif(attn._xops is None or not torch.cuda.is_available(), reason="xformers on CUDA not available")
def test_xformers_matches_sdpa(monkeypatch):
    q, k, v = (torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.float16) for _ in range(3))
    monkeypatch.setenv("SORA_ATTENTION", "sdpa")
    ref = attn.attention(q, k, v)
    monkeypatch.setenv("SORA_ATTENTION", "xformers")
    assert torch.allclose(attn.attention(q, k, v), ref, atol=2e-3)


def test_unknown_attention_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SORA_ATTENTION", "magic")
    with pytest.raises(ValueError, match="SORA_ATTENTION='magic'"):
        attn.backend_for(torch.device("cpu"))


def test_training_steps_on_a_fixed_batch_lower_the_loss():
    torch.manual_seed(0)
    model = DiT(preset("micro").dit)
    x, time, text, mask = inputs(2)
    target = torch.randn_like(x)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = (model(x, time, text, mask) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_forward_flops_are_about_two_per_parameter_per_token_plus_attention():
    config = preset("xl").dit  # at this size the blocks hold nearly all weights
    with torch.device("meta"):
        n_params = parameter_count(DiT(config))
    # Attention negligible: ~2 FLOPs per weight per token, less the caption's key/value
    # projections, which run per caption token rather than per video token.
    few = forward_flops(config, tokens=8, text_tokens=0)
    assert 1.6 * n_params * 8 < few < 2.1 * n_params * 8
    many = forward_flops(config, tokens=4096, text_tokens=0)
    # Self-attention adds 4 * N * dim FLOPs per token per block (QK^T and AV): it grows with N.
    expected_extra = 4 * (4096 - 8) * config.dim * config.depth
    assert abs((many / 4096 - few / 8) - expected_extra) < 0.01 * expected_extra
