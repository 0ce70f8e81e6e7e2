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
every pixel: the plan says where, and (below) the outline, not the colours.

A DiT with `DiTConfig.silhouette` > 0 also reads each object's outline inside its tokens: how much of each
sub-cell (a token's cell split `silhouette` x `silhouette`) the planned shapes cover, projected by
`DiT.silhouette`. Eight-pixel cells cannot tell a square from a disc; two-pixel sub-cells can.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch

from .data.render import coverage
from .data.world import SIZES, Scene, object_scale, screen_path, shape_vertices
from .text import tokenize

log = logging.getLogger(__name__)


class Layout(NamedTuple):
    """One clip's grounding input: its objects' phrases, the (objects, N) tokens each touches, and the (N, S*S)
    silhouette (None for a DiT without `silhouette`)."""

    phrases: list[str]
    occupancy: torch.Tensor
    silhouette: torch.Tensor | None = None


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
    for i, obj in enumerate(scene.objects):
        path = screen_path(scene, obj)
        for k, span in enumerate(spans):
            for f in span:
                cx, cy, r, _ = _pose(scene, obj, path, f, frames, height, width)
                dx = np.clip(cx, x0, x0 + cell) - cx  # nearest point of each cell to the centre
                dy = np.clip(cy, y0, y0 + cell) - cy
                out[i, k] |= dy[:, None] ** 2 + dx[None, :] ** 2 < r * r
    return out


def _pose(scene: Scene, obj, path, f: int, frames: int, height: int, width: int):
    """Centre (px), radius (px) and angle (degrees) of `obj` at frame `f` of a clip of `frames` x `height` x
    `width` px: places are fractions of the frame, sizes follow its area, the plan's time is stretched over it."""
    s = 0 if frames == 1 or scene.frames == 1 else round(f * (scene.frames - 1) / (frames - 1))
    r = SIZES[obj.size] * object_scale(scene, obj, s) * np.sqrt(width * height)
    return path[0][s] * width, path[1][s] * height, r, obj.angle + obj.spin * s


def silhouettes(scene: Scene, frames: int, height: int, width: int, temporal_factor: int, cell: int,
                sub: int) -> np.ndarray:
    """(T', H' * sub, W' * sub) float32 in 0..1: how much of each sub-cell (`cell` / `sub` px square) the
    objects' outlines cover (all objects together), averaged over the pixel frames behind each latent frame."""
    spans = latent_frame_spans(frames, temporal_factor)
    gh, gw, px = height // cell, width // cell, cell // sub
    out = np.zeros((len(spans), gh * sub, gw * sub), dtype=np.float32)
    paths = [screen_path(scene, obj) for obj in scene.objects]
    for k, span in enumerate(spans):
        for f in span:
            clear = np.ones((gh * cell, gw * cell), dtype=np.float32)  # share of each pixel no object covers
            for obj, path in zip(scene.objects, paths):
                cx, cy, r, angle = _pose(scene, obj, path, f, frames, height, width)
                cov = coverage(shape_vertices(obj.shape, angle) * r + (cx, cy), gw * cell, gh * cell)
                if cov is not None:
                    x0, y0, alpha = cov
                    clear[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] *= 1 - alpha
            out[k] += (1 - clear).reshape(gh * sub, px, gw * sub, px).mean(axis=(1, 3))
        out[k] /= len(span)
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


def layout(scene: Scene | dict, config, grid: tuple[int, int, int]) -> Layout:
    """One clip's grounding input over a latent grid (T, H, W) of `config`'s model (a SoraConfig), tokens in
    `patchify` order; the silhouette only for a DiT that reads one."""
    if isinstance(scene, dict):
        scene = Scene.from_dict(scene)
    t, h, w = grid
    s, tf, cell = config.vae.spatial_factor, config.vae.temporal_factor, config.pixel_multiple
    frames = 1 + tf * (t - 1)
    if scene.frames > 1 and frames > 1 and scene.frames != frames:
        log.warning("the layout was planned for %d frames and is stretched over this clip's %d: its objects move "
                    "%.2gx as fast as planned (faster blurs shapes round); plan for %d frames (Sora Recaption's frames, "
                    "recaption.plan(..., frames=%d))", scene.frames, frames, (scene.frames - 1) / (frames - 1),
                    frames, frames)
    occ = occupancy(scene, frames, h * s, w * s, tf, cell)
    sil, sub = None, config.dit.silhouette
    if sub:
        cells = silhouettes(scene, frames, h * s, w * s, tf, cell, sub)  # (T', H' sub, W' sub)
        gh, gw = cells.shape[1] // sub, cells.shape[2] // sub
        cells = cells.reshape(len(cells), gh, sub, gw, sub).transpose(0, 1, 3, 2, 4)
        sil = torch.from_numpy(np.ascontiguousarray(cells).reshape(-1, sub * sub))
    return Layout([phrase(o) for o in scene.objects], torch.from_numpy(occ.reshape(len(occ), -1)), sil)


def place(occ: torch.Tensor, embeddings: torch.Tensor, tokens: int,
          silhouette: torch.Tensor | None = None) -> torch.Tensor:
    """(tokens, D [+ S*S]): each object's (objects, D) embedding summed over the tokens its (objects, N) `occ`
    covers, then the (N, S*S) silhouette where there is one."""
    if occ.shape[1] != tokens:
        raise ValueError(f"layout covers {occ.shape[1]} tokens; the latents have {tokens}")
    out = occ.to(device=embeddings.device, dtype=embeddings.dtype).T @ embeddings
    if silhouette is None:
        return out
    return torch.cat([out, silhouette.to(device=out.device, dtype=out.dtype)], dim=-1)


def grounding(text_encoder, layouts: list[Layout | None], tokens: int) -> torch.Tensor:
    """(B, tokens, D [+ S*S]): for each clip's layout (None or no objects: all zeros), the sum of its phrases' pooled
    embeddings over the tokens each object touches, and its silhouette."""
    phrases = sorted({p for lay in layouts if lay is not None for p in lay.phrases})
    table = pooled(text_encoder, phrases) if phrases else None
    index = {p: i for i, p in enumerate(phrases)}
    width = text_encoder.config.dim + max((lay.silhouette.shape[1] for lay in layouts
                                           if lay is not None and lay.silhouette is not None), default=0)
    empty = torch.zeros(tokens, width, device=text_encoder.device,
                        dtype=table.dtype if table is not None else torch.float32)
    # A scene without objects covers nothing and outlines nothing: its row is empty too.
    return torch.stack([place(lay.occupancy, table[[index[p] for p in lay.phrases]], tokens, lay.silhouette)
                        if lay is not None and lay.phrases else empty for lay in layouts])
