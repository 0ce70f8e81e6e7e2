"""Live-preview colours: the fitted latent -> RGB map against the decoder itself.

A linear map cannot follow this VAE's decoder closely (on the default model's own generations the
overall colour is off by about 0.1 on average, up to 0.2 on a navy background), which is why
`--preview-method taesd` decodes the preview with the model's VAE instead (tests/test_comfyui_server.py).
"""

import pytest
import torch
import torch.nn.functional as F

from sora_core.checkpoint import load_checkpoint
from sora_core.pipeline import DEFAULT_MODEL
from sora_core.preview import LatentRGB, _colour_fields, fit_latent_rgb


@pytest.fixture(scope="module")
def vae():
    """The shipped model's VAE: a random one decodes every latent to nearly the same grey."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip("the shipped default model is not in this checkout")
    return load_checkpoint(DEFAULT_MODEL, parts=["vae"]).vae.eval()


@torch.no_grad()
def test_preview_colours_follow_the_decoder_on_unseen_images(vae):
    """As ComfyUI shows a preview: (x + 1) / 2, clamped; against the decoded frame averaged per latent cell."""
    rgb = fit_latent_rgb(vae)
    z = vae.encode(_colour_fields(8, 8 * vae.spatial_factor, torch.Generator().manual_seed(7))[:, :, None])
    shown = (F.avg_pool2d(vae.decode(z).float()[:, :, 0].clamp(-1, 1), vae.spatial_factor) + 1) / 2
    preview = ((rgb.apply(z)[:, :, 0] + 1) / 2).clamp(0, 1)
    flat = shown.mean((0, 2, 3), keepdim=True)  # the best colour that ignores the latent
    assert (preview - shown).abs().mean() < 0.8 * (flat - shown).abs().mean()
    assert (preview.mean((0, 2, 3)) - shown.mean((0, 2, 3))).abs().max() < 0.08  # no overall cast


def test_the_map_is_plain_numbers_for_comfyui():
    m = LatentRGB(factors=[[0.5, 0.0, -0.5]] * 2, bias=[0.1, 0.2, 0.3])
    z = torch.ones(1, 2, 1, 1, 1)
    assert torch.allclose(m.apply(z)[0, :, 0, 0, 0], torch.tensor([1.1, 0.2, -0.7]))
