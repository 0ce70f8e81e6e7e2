"""Large images in bounded memory: attention never materialises an N x N score matrix, and frames
wider than `pipeline.AUTO_TILE` latent cells are decoded in tiles (the 2048x2048 image path)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sora_core import attention, pipeline
from sora_core.budget import Budget, BudgetError, check, estimate
from sora_core.config import preset
from sora_core.pipeline import Pipeline


class Allocations(TorchDispatchMode):
    """Every tensor an op returns (below autograd: what the kernels actually allocate), by op name."""

    def __init__(self):
        super().__init__()
        self.outputs: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.outputs.append((str(func), t.numel()))
        return out

    def largest(self) -> tuple[str, int]:
        return max(self.outputs, key=lambda o: o[1])

    def ops(self) -> set[str]:
        return {name for name, _ in self.outputs}


def test_a_large_image_runs_with_flash_attention_and_no_quadratic_buffer(micro_model):
    """The 2048x2048 text-to-image path at a size the micro model runs in a blink: 512x256 pixels is a
    128x64 latent, 2048 tokens, so one head's scores would be 4.2M elements, more than any other tensor."""
    pipe = Pipeline.from_model(micro_model)
    tokens = (256 // 8) * (512 // 8)
    with Allocations() as seen:
        image = pipe.generate("a red circle", width=512, height=256, frames=1, steps=1, cfg=3.0)
    assert image.shape == (1, 256, 512, 3)
    assert "aten._scaled_dot_product_flash_attention_for_cpu.default" in seen.ops()
    name, numel = seen.largest()
    assert numel < tokens * tokens, f"{name} made a tensor of {numel} elements (N x N = {tokens * tokens})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_above_the_small_problem_limit_every_dtype_takes_the_flash_kernel(monkeypatch, dtype):
    q, k, v = (torch.randn(1, 2, 512, 16, dtype=dtype) for _ in range(3))
    monkeypatch.setattr(attention, "MATH_SCORES_LIMIT", 1 << 10)  # 512 x 512 x 2 heads is now "large"
    with Allocations() as seen:
        out = attention.attention(q, k, v)
    assert seen.largest()[1] < 512 * 512
    reference = torch.softmax((q.float() @ k.float().transpose(-1, -2)) / 4, -1) @ v.float()
    torch.testing.assert_close(out.float(), reference, atol=2e-2 if dtype == torch.bfloat16 else 1e-5, rtol=0)


def test_frames_larger_than_the_auto_tile_are_decoded_in_tiles(micro_model, monkeypatch):
    pipe = Pipeline.from_model(micro_model)
    tiles = []
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z, **kw: tiles.append(kw.get("tile")) or decode(z, **kw))
    monkeypatch.setattr(pipeline, "AUTO_TILE", 8)  # latent cells: 32 px for the micro VAE
    small = pipe.generate("a red circle", width=32, height=32, frames=1, steps=1, seed=2)
    large = pipe.generate("a red circle", width=64, height=32, frames=1, steps=1, seed=2)
    untiled = pipe.generate("a red circle", width=64, height=32, frames=1, steps=1, seed=2, decode_tile=0)
    assert tiles == [None, 8, 0]
    assert large.shape == untiled.shape == (1, 32, 64, 3)
    assert (large - untiled).abs().mean() < 0.05 and small.shape == (1, 32, 32, 3)  # the same picture, blended tiles


def test_the_budget_plans_the_tiled_decode_so_large_images_are_admitted_where_they_fit(micro_model, monkeypatch):
    monkeypatch.setattr(pipeline, "AUTO_TILE", 8)
    pipe = Pipeline.from_model(micro_model)
    size = dict(width=256, height=32, frames=1)  # 64 latent cells wide: decoded in tiles of 8
    tiled, untiled = (estimate(pipe.config, **size, tile=t).memory for t in (8, None))
    assert tiled < untiled
    pipe.budget = Budget(max_memory=(tiled + untiled) // 2)
    image = pipe.generate("a red circle", **size, steps=1, cfg=3.0)
    assert image.shape == (1, 32, 256, 3)
    with pytest.raises(BudgetError, match="VAE decode"):  # the same image decoded whole does not fit
        pipe.generate("a red circle", **size, steps=1, cfg=3.0, decode_tile=0)


def test_a_2048_image_of_the_shipped_preset_is_admitted_in_a_few_gib():
    """The default token limit admits 2048x2048 (65,536 tokens) and, decoded in tiles, it is estimated at
    under 2 GiB (untiled: over 7)."""
    tiny, size = preset("tiny"), dict(width=2048, height=2048, frames=1, passes=1)
    est = check(tiny, what="generate", **size, tile=pipeline.AUTO_TILE, budget=Budget(max_memory=2 << 30))
    assert est.tokens == 65536
    with pytest.raises(BudgetError, match="VAE decode"):
        check(tiny, what="generate", **size, budget=Budget(max_memory=2 << 30))
