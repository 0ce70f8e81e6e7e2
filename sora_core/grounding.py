"""Layout grounding: a planned scene tells the DiT where each object is, token by token.

Text to video has to decide, in the same high-noise steps, what is in the clip, where, and which
way it goes; the default model reads the first well and the last hardly at all (docs/training.md,
sections 11-15). A recaptioner that expands a short prompt into a detailed caption has already
planned a scene (the offline one samples it; see `recaption.plan`), so the plan can be handed to the
DiT as well as the caption: LLM-grounded video diffusion (Lian et al. 2023) and GLIGEN's grounding
tokens (Li et al. 2023) do the same with boxes and phrases.

Each object of the plan contributes its phrase ("red square") pooled by the text encoder, added
to the embedding of every DiT token whose cell it touches during that token's latent frame; tokens
no object touches get nothing. The DiT projects the sum (`DiT.ground`, zero at the start of
training, so a grounded model starts as the model it was warm-started from). The DiT still draws
every pixel: the plan says where, not what it looks like.
"""

from __future__ import annotations

import numpy as np
import torch

from .data.world import SIZES, Scene, object_scale, screen_path
from .text import tokenize


def phrase(obj) -> str:
    """What the grounding embeds for one object: its colour and shape words, as the captions name them."""
    return f"{obj.color} {obj.shape}"


def latent_frame_spans(frames: int, temporal_factor: int) -> list[range]:
    """Pixel frames behind each latent frame of a causal VAE: frame 0 alone, then `temporal_factor` each."""
    return [range(0, 1)] + [range(temporal_factor * (k - 1) + 1, temporal_factor * k + 1)
                            for k in range(1, (frames - 1) // temporal_factor + 1)]


def occupancy(scene: Scene, frames: int, height: int, width: int, temporal_factor: int, cell: int) -> np.ndarray:
    """(objects, T', H', W') bool: the token cells (`cell` px square) each object's disc touches during each
    latent frame, for a clip of `frames` x `height` x `width` px following `scene`. The scene may be planned at
    another size and length: its places are fractions of the frame, its sizes follow the frame's area, and its
    time is stretched over the clip's frames."""
    spans = latent_frame_spans(frames, temporal_factor)
    gh, gw = height // cell, width // cell
    out = np.zeros((len(scene.objects), len(spans), gh, gw), dtype=bool)
    x0, y0 = np.arange(gw) * cell, np.arange(gh) * cell  # each cell's left / top edge, px
    area = np.sqrt(width * height)
    for i, obj in enumerate(scene.objects):
        xs, ys = screen_path(scene, obj)
        for k, span in enumerate(spans):
            for f in span:
                s = 0 if frames == 1 or scene.frames == 1 else round(f * (scene.frames - 1) / (frames - 1))
                cx, cy = xs[s] * width, ys[s] * height
                r = SIZES[obj.size] * object_scale(scene, obj, s) * area
                dx = np.clip(cx, x0, x0 + cell) - cx  # nearest point of each cell to the centre
                dy = np.clip(cy, y0, y0 + cell) - cy
                out[i, k] |= dy[:, None] ** 2 + dx[None, :] ** 2 < r * r
    return out


def pooled(text_encoder, phrases: list[str]) -> torch.Tensor:
    """(P, D) mean of the text encoder's outputs over each phrase's tokens (BOS left out)."""
    ids, mask = tokenize(phrases, text_encoder.config.vocab_size, text_encoder.config.max_tokens)
    ids, mask = ids.to(text_encoder.device), mask.to(text_encoder.device)
    emb = text_encoder(ids, mask)
    words = mask.clone()
    words[:, 0] = False
    w = words.to(emb.dtype)[..., None]
    return (emb * w).sum(1) / w.sum(1).clamp(min=1)


def layout(scene: Scene | dict, config, grid: tuple[int, int, int]) -> tuple[list[str], torch.Tensor]:
    """One clip's grounding input over a latent grid (T, H, W) of `config`'s model (a SoraConfig): its objects'
    phrases and (objects, N) token occupancy in `patchify` order."""
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    t, h, w = grid
    s, tf = config.vae.spatial_factor, config.vae.temporal_factor
    occ = occupancy(scene, 1 + tf * (t - 1), h * s, w * s, tf, config.pixel_multiple)
    return [phrase(o) for o in scene.objects], torch.from_numpy(occ.reshape(len(occ), -1))


def place(occ: torch.Tensor, embeddings: torch.Tensor, tokens: int) -> torch.Tensor:
    """(tokens, D): each object's (objects, D) embedding summed over the tokens its (objects, N) `occ` covers."""
    if occ.shape[1] != tokens:
        raise ValueError(f"layout covers {occ.shape[1]} tokens; the latents have {tokens}")
    return occ.to(device=embeddings.device, dtype=embeddings.dtype).T @ embeddings


def grounding(text_encoder, layouts: list[tuple[list[str], torch.Tensor] | None], tokens: int) -> torch.Tensor:
    """(B, tokens, D): for each clip's layout (None: none), the sum of its phrases' pooled embeddings over the
    tokens each object touches."""
    phrases = sorted({p for lay in layouts if lay is not None for p in lay[0]})
    table = pooled(text_encoder, phrases) if phrases else None
    index = {p: i for i, p in enumerate(phrases)}
    empty = torch.zeros(tokens, text_encoder.config.dim, device=text_encoder.device,
                        dtype=table.dtype if table is not None else torch.float32)
    return torch.stack([place(lay[1], table[[index[p] for p in lay[0]]], tokens) if lay is not None and lay[0]
                        else empty for lay in layouts])
