"""Live-preview colours: the fitted latent -> RGB map against the decoder itself."""

import json

import pytest
import torch

from sora_core.checkpoint import load_checkpoint
from sora_core.pipeline import DEFAULT_MODEL
from sora_core.preview import (FIT_VERSION, METADATA_KEY, LatentRGB, _colour_fields, average_colours,
                               fit_latent_rgb, latent_rgb_from_metadata)


@pytest.fixture(scope="module")
def vae():
    """The shipped model's VAE: a random one decodes every latent to nearly the same grey."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip("the shipped default model is not in this checkout")
    return load_checkpoint(DEFAULT_MODEL, parts=["vae"]).vae.eval()


@pytest.fixture(scope="module")
def rgb(vae):
    return fit_latent_rgb(vae)


def held_out(vae, kind: str) -> torch.Tensor:
    """Latents the fit never saw: encoded colour fields, or draws from the prior (another seed)."""
    g = torch.Generator().manual_seed(7)
    fields = _colour_fields(8, 8 * vae.spatial_factor, g)[:, :, None]
    with torch.no_grad():
        z = vae.encode(fields)
    return z if kind == "encoded" else torch.randn(z.shape, generator=g)


# kind -> (largest error relative to the best flat colour's, largest overall colour cast), as ComfyUI shows
# the preview: (x + 1) / 2, clamped. The fit on encoded images alone gave 1.59 / 0.08 on prior draws.
LIMITS = {"encoded": (0.8, 0.08), "prior": (1.25, 0.12)}


@pytest.mark.parametrize("kind", sorted(LIMITS))
def test_preview_colours_follow_the_decoder(vae, rgb, kind):
    z = held_out(vae, kind)
    with torch.no_grad():
        shown = (average_colours(vae, z) + 1) / 2
    preview = ((rgb.apply(z)[:, :, 0] + 1) / 2).clamp(0, 1)
    flat = shown.mean((0, 2, 3), keepdim=True)  # the best colour that ignores the latent
    relative = (preview - shown).abs().mean() / (flat - shown).abs().mean()
    cast = (preview.mean((0, 2, 3)) - shown.mean((0, 2, 3))).abs().max()  # darker, or tinted
    assert relative < LIMITS[kind][0] and cast < LIMITS[kind][1], (float(relative), float(cast))


def test_a_map_from_an_older_fit_is_fitted_again(rgb):
    current = {"extra": json.dumps({METADATA_KEY: rgb.to_json()})}
    assert latent_rgb_from_metadata(current, len(rgb.factors)) == rgb
    old = {"extra": json.dumps({METADATA_KEY: {"factors": rgb.factors, "bias": rgb.bias}})}  # FIT_VERSION 1
    assert FIT_VERSION > 1 and latent_rgb_from_metadata(old, len(rgb.factors)) is None
    assert latent_rgb_from_metadata(current, len(rgb.factors) + 1) is None


def test_the_map_is_plain_numbers_for_comfyui():
    m = LatentRGB(factors=[[0.5, 0.0, -0.5]] * 2, bias=[0.1, 0.2, 0.3])
    z = torch.ones(1, 2, 1, 1, 1)
    assert torch.allclose(m.apply(z)[0, :, 0, 0, 0], torch.tensor([1.1, 0.2, -0.7]))
