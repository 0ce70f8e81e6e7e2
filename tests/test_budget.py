"""The up-front budget: token counts and memory estimates, their limits and the refusal messages."""

import pytest
import torch

from sora_core.budget import Budget, BudgetError, check, estimate, format_size, parse_size
from sora_core.config import preset

MICRO = preset("micro")


@pytest.mark.parametrize("text,size", [("16GB", 16 << 30), ("16 GiB", 16 << 30), ("512m", 512 << 20), ("1.5T", 3 << 39),
                                       ("4096", 4096)])
def test_sizes_read_like_people_write_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "0", "12 parsecs"])
def test_unreadable_sizes_are_refused_by_value(text):
    with pytest.raises(ValueError, match=f"memory size {text!r} is not allowed"):
        parse_size(text)


def test_tokens_follow_the_latent_patch_grid_and_the_batch():
    # micro: 4x spatial VAE, 2x2 patches, 4 frames per latent frame -> 8 px per token side
    assert estimate(MICRO, width=64, height=32, frames=9).tokens == 8 * 4 * 3
    assert estimate(MICRO, width=64, height=32, frames=9, batch=3).tokens == 3 * 8 * 4 * 3


def test_memory_grows_with_every_dimension_and_tiles_bound_the_decode():
    base = estimate(MICRO, width=64, height=64, frames=9)
    for bigger in (dict(width=128), dict(height=128), dict(frames=17), dict(batch=2)):
        grown = estimate(MICRO, **(dict(width=64, height=64, frames=9) | bigger))
        assert grown.memory > base.memory and grown.stages["sample"] > base.stages["sample"]
    untiled = estimate(MICRO, width=512, height=512, frames=9, stages=("decode",))
    tiled = estimate(MICRO, width=512, height=512, frames=9, stages=("decode",), tile=16)
    assert tiled.memory < untiled.memory
    assert estimate(MICRO, width=64, height=64, frames=9, passes=1).stages["sample"] < base.stages["sample"]
    assert estimate(MICRO, width=64, height=64, frames=9, passes=3).stages["sample"] > base.stages["sample"]


def test_bfloat16_activations_take_half_the_bytes_on_an_accelerator():
    f32 = estimate(MICRO, width=512, height=512, frames=17, stages=("sample",), device="meta")
    bf16 = estimate(MICRO, width=512, height=512, frames=17, stages=("sample",), dtype=torch.bfloat16, device="meta")
    assert bf16.stages["sample"] < f32.stages["sample"]


def test_a_refusal_names_the_size_the_estimate_and_the_limit():
    with pytest.raises(BudgetError) as refused:
        check(MICRO, what="Sora Patchify Grid", width=256, height=128, frames=17, batch=2,
              budget=Budget(max_memory=1 << 20))
    text = str(refused.value)
    assert text.startswith("Sora Patchify Grid: 2 videos of 256x128 px x 17 frames needs about ")
    assert "sampling " in text and "VAE decode " in text and "the limit is 1.0 MiB (as asked;" in text
    est = estimate(MICRO, width=256, height=128, frames=17, batch=2)
    assert f"needs about {format_size(est.memory)} of memory" in text


def test_the_environment_sets_the_limits_and_a_budget_overrides_it(monkeypatch):
    monkeypatch.setenv("SORA_MAX_TOKENS", "50")
    monkeypatch.setenv("SORA_MAX_MEMORY", "3GB")
    assert Budget().token_limit() == (50, "SORA_MAX_TOKENS")
    assert Budget().memory_limit("cpu") == (3 << 30, "SORA_MAX_MEMORY")
    assert Budget(max_tokens=70).token_limit() == (70, "as asked")
    check(MICRO, what="x", width=32, height=32, frames=9, budget=Budget(max_tokens=70))  # 48 tokens
    monkeypatch.setenv("SORA_MAX_TOKENS", "many")
    with pytest.raises(ValueError, match="SORA_MAX_TOKENS='many' is not allowed"):
        Budget().token_limit()


def test_the_default_memory_limit_is_what_the_cpu_has_available_now(monkeypatch):
    monkeypatch.delenv("SORA_MAX_MEMORY", raising=False)
    limit, source = Budget().memory_limit("cpu")
    assert source == "the memory available now" and 0 < limit


def test_decode_and_encode_only_checks_ignore_the_token_limit():
    check(MICRO, what="Sora VAE Decode", width=512, height=512, frames=9, stages=("decode",),
          budget=Budget(max_tokens=1))
    with pytest.raises(BudgetError, match="DiT tokens"):
        check(MICRO, what="Sora DiT Sampler", width=512, height=512, frames=9, stages=("sample",),
              budget=Budget(max_tokens=1))


def test_decoder_levels_above_the_frame_split_cost_a_video_its_frames_and_an_image_one():
    from dataclasses import replace

    from sora_core.budget import estimate
    from sora_core.config import preset

    at_output = preset("tiny")
    at_output = replace(at_output, vae=replace(at_output.vae, depth_to_time_level=None))
    low = replace(at_output, vae=replace(at_output.vae, depth_to_time_level=0))
    top = replace(at_output, vae=replace(at_output.vae, depth_to_time_level=2))

    def decode(config, frames):
        return estimate(config, width=256, height=256, frames=frames, stages=("decode",)).stages["decode"]

    # 17 frames decoded 4 latent frames at a time: the full-resolution level sees 16 frames, not 4
    assert decode(low, 17) > 2 * decode(at_output, 17)
    assert decode(at_output, 17) < decode(top, 17) < decode(low, 17)  # the split conv's frames at full size
    assert decode(low, 1) == decode(at_output, 1)  # an image: one frame at every level either way
