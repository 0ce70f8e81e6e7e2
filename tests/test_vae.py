"""The video compression network: causality, images as 1-frame videos, chunking, sizes."""

import math

import pytest
import torch

from sora_core.config import preset
from sora_core.vae import VideoVAE


@pytest.fixture(scope="module", params=[None, 0, "0-temporal"],
                ids=["frames-at-output", "frames-at-level-0", "frames-at-level-0-then-3x3x3"])
def vae(request):
    """The decoders: frames made by the output conv (the first shipped design) or split after the lowest
    level, with per-frame levels above it or (as shipped) a level of causal 3x3x3 convs over frames."""
    from dataclasses import replace

    torch.manual_seed(0)
    levels = 2 if request.param == "0-temporal" else 1
    split = None if request.param is None else 0
    return VideoVAE(replace(preset("micro").vae, depth_to_time_level=split, temporal_levels=levels)).eval()


def video(frames, h=32, w=48, seed=0):
    return torch.rand(1, 3, frames, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@torch.no_grad()
def test_compresses_four_frames_and_eight_pixels_per_latent_cell():
    v = VideoVAE(preset("tiny").vae).eval()
    z = v.encode(video(17, 64, 96))
    assert z.shape == (1, v.config.latent_channels, 5, 16, 24)  # tiny preset: 4x spatial, 4x temporal


@torch.no_grad()
def test_encoding_a_prefix_gives_a_prefix_of_the_latents(vae):
    x = video(13)
    full = vae.encode(x)
    for k in range(3):
        # equal up to float rounding: the batch of chunks differs, so BLAS may sum in another order
        assert torch.allclose(vae.encode(x[:, :, : 1 + 4 * k]), full[:, :, : 1 + k], atol=1e-5)


@torch.no_grad()
def test_an_image_is_a_one_frame_video_and_decodes_to_one_frame(vae):
    img = video(1)
    z = vae.encode(img)
    assert z.shape[2] == 1
    assert vae.decode(z).shape == img.shape


@torch.no_grad()
def test_a_still_image_and_a_still_chunk_share_one_latent(vae):
    img = video(1)
    still_chunk = img.expand(-1, -1, 4, -1, -1)
    assert torch.allclose(vae.encode(img), vae.encode_chunks(still_chunk), atol=1e-6)


@torch.no_grad()
def test_a_chunk_latent_does_not_depend_on_where_it_sits_in_time(vae):
    x = video(13)
    full = vae.encode(x)
    # frames 5..8 are the second chunk after frame 0
    assert torch.allclose(vae.encode_chunks(x[:, :, 5:9]), full[:, :, 2:3], atol=1e-6)


@pytest.mark.parametrize("h,w,frames", [(32, 48, 9), (48, 16, 5), (16, 16, 1), (24, 40, 21)])
@torch.no_grad()
def test_odd_and_non_square_sizes_round_trip_in_shape(vae, h, w, frames):
    x = video(frames, h, w)
    z = vae.encode(x)
    assert z.shape == (1, 4, 1 + (frames - 1) // 4, h // 4, w // 4)
    assert vae.decode(z).shape == x.shape


@torch.no_grad()
def test_chunked_decode_matches_decoding_everything_at_once(vae):
    z = vae.encode(video(25))
    whole = vae.decode(z, chunk=z.shape[2])
    for chunk in (1, 2, 3):
        assert torch.allclose(vae.decode(z, chunk=chunk), whole, atol=1e-5)


@torch.no_grad()
def test_chunked_encode_matches_encoding_everything_at_once(vae):
    x = video(25)
    assert torch.allclose(vae.encode(x, chunk_batch=1), vae.encode(x, chunk_batch=64), atol=1e-6)


def smooth_video(frames, h, w):
    """Gradients and a moving blob: content whose decode depends little on far-away pixels."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    t = torch.arange(frames)[:, None, None] / frames
    blob = torch.exp(-((x - t + 0.5) ** 2 + y**2) * 8)
    return torch.stack([blob, x.expand_as(blob) * 0.5, y.expand_as(blob) * 0.5])[None] * 0.8


@torch.no_grad()
def test_tiled_decode_with_several_tiles_matches_the_untiled_decode(vae):
    from sora_core.vae import tile_windows

    z = vae.encode(smooth_video(5, 64, 96))  # latent 16 x 24
    tiles = list(tile_windows(16, 24, 12, 4, 4))
    assert len(tiles) >= 4  # several tiles in both directions, overlapping
    whole = vae.decode(z)
    tiled = vae.decode(z, tile=12, overlap=4)
    assert tiled.shape == whole.shape == (1, 3, 5, 64, 96)
    error = (tiled - whole).abs()
    # tiles see less context at their edges, so only close, not equal; a misplaced tile or a wrong
    # blend weight shows up as errors of the size of the picture itself
    assert error.mean() < 0.01 * whole.abs().mean() and error.max() < 0.1 * whole.abs().max()


def test_frame_count_errors_name_the_value_and_nearest_valid_counts(vae):
    with pytest.raises(ValueError, match=r"frames=11 .*1 \+ 4\*k.*\[9, 13\]"):
        vae.encode(video(11))


def test_size_errors_name_the_dimension_and_nearest_valid_sizes(vae):
    with pytest.raises(ValueError, match=r"width=50 .*multiple of 4.*\[48, 52\]"):
        vae.encode(torch.zeros(1, 3, 1, 32, 50))


def test_temporal_factor_must_be_a_positive_integer():
    from dataclasses import replace

    with pytest.raises(ValueError, match="temporal_factor=0"):
        VideoVAE(replace(preset("micro").vae, temporal_factor=0))


def test_depth_to_time_level_must_name_a_decoder_level():
    from dataclasses import replace

    for bad in (-1, 3, 1.5, "0", True):
        with pytest.raises(ValueError, match=rf"depth_to_time_level={bad!r} is not allowed.*0\.\.2"):
            VideoVAE(replace(preset("micro").vae, depth_to_time_level=bad))


@torch.no_grad()
def test_a_decoder_warm_started_at_a_lower_split_gives_each_frame_its_chunks_mean():
    """With every level above the split per-frame, the warm start is exact: the split copies each latent
    frame's features into its 4 frames, so they all decode to the old decoder's 4 frames averaged."""
    from dataclasses import replace

    from sora_core.train.vae import warm_start_decoder

    torch.manual_seed(1)
    config = replace(preset("micro").vae, temporal_levels=1, latent_mean=(0.1, 0.2, 0.3, 0.4),
                     latent_std=(1.0, 2.0, 0.5, 1.5))
    old = VideoVAE(config).eval()
    new = VideoVAE(replace(config, depth_to_time_level=0)).eval()
    warm_start_decoder(new, old)
    x = video(9, 16, 16)
    z = old.encode(x)
    assert torch.equal(new.encode(x), z)  # same encoder, same statistics: same latents
    before, after = old.decode(z), new.decode(z)
    assert after.shape == before.shape == x.shape
    for k in range(2):  # frames 1-4 and 5-8 are chunks 1 and 2
        chunk = slice(1 + 4 * k, 5 + 4 * k)
        mean = before[:, :, chunk].mean(dim=2, keepdim=True)
        assert torch.allclose(after[:, :, chunk], mean.expand_as(after[:, :, chunk]), atol=1e-5)
    assert not torch.allclose(before[:, :, 1:5], before[:, :, 1:2].expand(-1, -1, 4, -1, -1), atol=1e-3)
    with pytest.raises(ValueError, match="splits frames at its output"):
        warm_start_decoder(old, new)


@torch.no_grad()
def test_an_image_runs_the_levels_above_the_split_on_one_frame(vae):
    """Latent frame 0 is the still chunk of the lone first frame: above the split it is one frame, not tf."""
    seen = []
    last = [m for m in vae.decoder.net if hasattr(m, "conv")][-1]
    handle = last.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[2]))
    try:
        assert vae.decode(vae.encode(video(1))).shape[2] == 1
        assert vae.decode(vae.encode(video(9)), chunk=1).shape[2] == 9
    finally:
        handle.remove()
    if vae.config.depth_to_time_level is None:
        assert seen == [1, 1, 1, 1]  # latent frames; the output conv makes the frames
    else:
        assert seen == [1, 1, 4, 4]  # frames: 1 for the image, then 1 + 4 + 4 for the video, chunk by chunk


def test_training_steps_on_a_fixed_batch_lower_the_reconstruction_loss():
    from sora_core.train.vae import vae_loss

    torch.manual_seed(0)
    v = VideoVAE(preset("micro").vae)
    ramp = torch.linspace(-1, 1, 48)
    x = (ramp[None, None, None, None, :] * torch.tensor([1.0, -0.5, 0.3])[None, :, None, None, None]).expand(1, 3, 5, 32, 48)
    opt = torch.optim.Adam(v.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        recon, mean, logvar = v(x, torch.Generator().manual_seed(0))
        loss, _ = vae_loss(recon, x, mean, logvar, 1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9


def test_the_temporal_weight_prices_a_decoder_that_holds_each_chunk_and_jumps():
    from sora_core.train.vae import vae_loss

    x = torch.arange(48) / 48 * 4 * math.pi
    target = torch.stack([torch.sin(x + 0.3 * t).expand(3, 32, 48) for t in range(9)], dim=1)[None]  # steady motion
    held = target.clone()
    for t in range(1, 9):  # each 4-frame chunk shows its last frame throughout: same frames at the boundaries
        held[:, :, t] = target[:, :, 4 * ((t + 3) // 4)]
    zeros = torch.zeros(1, 4, 3, 8, 12)
    light, parts = vae_loss(held, target, zeros, zeros, 1e-4, temporal_weight=0.0)
    heavy, _ = vae_loss(held, target, zeros, zeros, 1e-4, temporal_weight=4.0)
    assert parts["temporal"] > 0.05  # the holds and jumps are what the term measures
    torch.testing.assert_close(heavy - light, 4.0 * parts["temporal"])
    _, still = vae_loss(target, target, zeros, zeros, 1e-4, temporal_weight=4.0)
    assert float(still["temporal"]) == 0.0
