"""Tiny random Wan files under the names artists' files have, in a ComfyUI-style models/ folder: the
one place tests (loader nodes, workflows, the real server) get a Wan 2.1 / 2.2 setup from."""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

import torch

from sora_core.wan.dit import WanDiTConfig
from sora_core.wan.umt5 import UMT5Config, expected_shapes
from sora_core.wan.vae import WanVAEConfig

from .test_wan_dit import random_state, write
from .test_wan_vae import write_random_file

TEXT_DIM = 64  # the tiny umt5's width, which the tiny DiTs read
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
FAMILIES = {  # family -> (diffusion model file, VAE file, latent channels, tiny VAE)
    "2.1": ("wan2.1_t2v_1.3B_fp16.safetensors", "wan_2.1_vae.safetensors", 16, WanVAEConfig("2.1", dim=8, dec_dim=8, z_dim=16)),
    "2.2": ("wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors", 48, WanVAEConfig("2.2", dim=8, dec_dim=12, z_dim=48)),
}


def tiny_dit(channels: int, text_dim: int = TEXT_DIM) -> WanDiTConfig:
    """The tiny Wan DiT every test file uses (head width 128, as in every release)."""
    return WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512, text_dim=text_dim, in_channels=channels,
                        out_channels=channels)


def tiny_umt5(text_dim: int = TEXT_DIM, layers: int = 2) -> UMT5Config:
    return UMT5Config(vocab_size=64, dim=text_dim, inner_dim=64, heads=4, ffn_dim=96, layers=layers)


@functools.lru_cache(maxsize=1)  # training it takes a moment and every fixture wants the same one
def spiece_model() -> bytes:
    """A tiny SentencePiece unigram model (umt5's tokenizer format), trained on a few words."""
    import sentencepiece as spm  # test-only, like diffusers / transformers

    rng = random.Random(0)
    words = "a red ball blue square moving left right the cat runs over hill sky sea slowly".split()
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(" ".join(rng.choice(words) for _ in range(8)) for _ in range(300)), model_writer=out,
        model_type="unigram", vocab_size=60, pad_id=0, eos_id=1, bos_id=2, unk_id=3, hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    return out.getvalue()


def umt5_state(config: UMT5Config, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in expected_shapes(config).items():
        if k.endswith("layer_norm.weight"):
            state[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "relative_attention_bias" in k or k == "shared.weight":
            state[k] = torch.randn(shape, generator=g)
        else:
            state[k] = torch.randn(shape, generator=g) / shape[1] ** 0.5
    return state


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
    text = tiny_umt5(text_dim)
    tokenizer = torch.frombuffer(bytearray(spiece_model()), dtype=torch.uint8)
    paths = {TEXT_ENCODER: root / "text_encoders" / TEXT_ENCODER}
    write(paths[TEXT_ENCODER], scaled_fp8(umt5_state(text)) | {"spiece_model": tokenizer})
    for family in families:
        dit_name, vae_name, channels, vae = FAMILIES[family]
        paths[dit_name] = root / "diffusion_models" / dit_name
        write(paths[dit_name], {k: v.half() for k, v in random_state(tiny_dit(channels, text_dim), seed=channels).items()})
        paths[vae_name] = Path(write_random_file(root / "vae" / vae_name, vae))
    return paths
