"""Tiny random Wan files under the names artists' files have, in a ComfyUI-style models/ folder: the
one place tests (loader nodes, workflows, the real server) get a Wan 2.1 / 2.2 setup from."""

from __future__ import annotations

from pathlib import Path

import torch

from sora_core.wan.dit import WanDiTConfig
from sora_core.wan.umt5 import UMT5Config
from sora_core.wan.vae import WanVAEConfig

from .test_wan_dit import random_state, write
from .test_wan_pipeline import spiece_model, umt5_state
from .test_wan_vae import write_random_file

TEXT_DIM = 64  # the tiny umt5's width, which the tiny DiTs read
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
FAMILIES = {  # family -> (diffusion model file, VAE file, latent channels, tiny VAE)
    "2.1": ("wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors", 16, WanVAEConfig("2.1", dim=8, dec_dim=8, z_dim=16)),
    "2.2": ("wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors", 48, WanVAEConfig("2.2", dim=8, dec_dim=12, z_dim=48)),
}


def scaled_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled fp8 layout: each 2-D block weight as fp8 with a per-tensor `scale_weight`
    (w = fp8 * scale), the rest in fp16, and the `scaled_fp8` marker."""
    out = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for k, v in state.items():
        if v.ndim == 2 and ".block." in k and "relative_attention_bias" not in k:
            scale = v.abs().amax() / 448
            out |= {k: (v / scale).to(torch.float8_e4m3fn), k[: -len("weight")] + "scale_weight": scale.reshape(())}
        else:
            out[k] = v.half()
    return out


def write_wan_models(models_dir, families=("2.1", "2.2"), text_dim: int = TEXT_DIM) -> dict[str, Path]:
    """Write the diffusion model and VAE of each family and the shared umt5 (scaled fp8, its tokenizer
    inside as `spiece_model`, as ComfyUI's file has it) into models_dir/diffusion_models, /vae and
    /text_encoders; returns file name -> path. `text_dim` 4096 (umt5-xxl's width) makes a DiT that
    core's UNETLoader builds too (it assumes that width)."""
    root = Path(models_dir)
    for sub in ("diffusion_models", "vae", "text_encoders"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    text = UMT5Config(vocab_size=64, dim=text_dim, inner_dim=64, heads=4, ffn_dim=96, layers=2)
    tokenizer = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    paths = {TEXT_ENCODER: root / "text_encoders" / TEXT_ENCODER}
    write(paths[TEXT_ENCODER], scaled_fp8(umt5_state(text)) | {"spiece_model": tokenizer})
    for family in families:
        dit_name, vae_name, channels, vae = FAMILIES[family]
        dit = WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512, text_dim=text_dim, in_channels=channels,
                           out_channels=channels)
        paths[dit_name] = root / "diffusion_models" / dit_name
        write(paths[dit_name], {k: v.half() for k, v in random_state(dit, seed=channels).items()})
        paths[vae_name] = Path(write_random_file(root / "vae" / vae_name, vae))
    return paths
