"""umt5-xxl, the Wan 2.1 / 2.2 text encoder, in the Hugging Face encoder key layout, and Wan's text path.

The module names give exactly the state-dict keys of `UMT5EncoderModel`, which artists' files
(`umt5_xxl_fp16.safetensors`, `umt5_xxl_fp8_e4m3fn_scaled.safetensors`) store:
`shared.weight`, `encoder.block.N.layer.0.SelfAttention.{q,k,v,o,relative_attention_bias}.weight`,
`encoder.block.N.layer.0.layer_norm.weight`, `encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight`,
`encoder.block.N.layer.1.layer_norm.weight`, `encoder.final_layer_norm.weight`. Unlike T5, every
block has its own relative position bias.

Precision: the residual stream and the RMS norms are fp32; matmuls run in the weights' dtype
(fp8 weights are upcast to bf16 one layer at a time, times the file's `scale_weight`, which the
loader attaches to the layer as `weight_scale`). fp16 is T5's weak spot (its activations outgrow
fp16's range): Hugging Face keeps `wo` in fp32 and clamps an fp16 residual; here the gated product
and `wo` run in fp32 when the weights are fp16 and the residual is fp32 anyway, so nothing has to
be clamped.

Wan's text path (wan/modules/t5.py + wan/modules/model.py of Wan2.1): the prompt is cleaned
(`clean_prompt`), tokenized with EOS and truncated to 512 tokens (EOS kept last), encoded with the
padding masked out, cut to its real length and zero-padded to 512 rows; the DiT attends to all 512
rows. ComfyUI's CLIPLoader(type=wan) + CLIPTextEncode gives the same (1, 512, 4096) fp32 tensor,
zeros after the EOS (it pads the ids with 0 to min_length 512, encodes them with the mask and zeroes
the padding), for prompts of up to 511 tokens. It differs in that it does not clean the prompt,
parses "(word:1.2)" weights (each weighted span tokenized on its own, weighted rows interpolated
against the empty prompt's), and never truncates (a longer prompt gives more than 512 rows). Its
CONDITIONING tensor can therefore be fed to a Wan DiT as it is.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import files
from .ops import TORCH
from .tokenizer import SentencePieceUnigram, load_tokenizer

TEXT_LEN = 512  # Wan's text_len: the DiT always receives 512 context rows
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


@dataclass(frozen=True)
class UMT5Config:
    """umt5 encoder sizes; the defaults are umt5-xxl's."""

    vocab_size: int = 256384
    dim: int = 4096  # d_model
    inner_dim: int = 4096  # heads * d_kv
    heads: int = 64
    ffn_dim: int = 10240
    layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128  # not in the weights; 128 in every umt5
    eps: float = 1e-6

    def describe(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.bfloat16 if weight.dtype in FP8_DTYPES else weight.dtype


def _linear(layer: nn.Linear, x: torch.Tensor, fp16_in_fp32: bool = False) -> torch.Tensor:
    """The layer in its compute dtype (the `ops` layer casts, and scales, its weight to the input's)."""
    dtype = _compute_dtype(layer.weight)
    if fp16_in_fp32 and dtype == torch.float16:
        dtype = torch.float32
    return layer(x.to(dtype))


class UMT5Attention(nn.Module):
    """Self-attention without 1/sqrt(d) scaling, with this block's own relative position bias."""

    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.heads = c.heads
        self.q = ops.Linear(c.dim, c.inner_dim, bias=False)
        self.k = ops.Linear(c.dim, c.inner_dim, bias=False)
        self.v = ops.Linear(c.dim, c.inner_dim, bias=False)
        self.o = ops.Linear(c.inner_dim, c.dim, bias=False)
        self.relative_attention_bias = ops.Embedding(c.num_buckets, c.heads)

    def forward(self, x, buckets, key_bias):
        b, n, _ = x.shape
        q, k, v = (_linear(p, x).view(b, n, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        bias = self.relative_attention_bias(buckets, out_dtype=torch.float32).permute(2, 0, 1)[None]  # (1, H, N, N)
        if key_bias is not None:
            bias = bias + key_bias  # (B, H, N, N): -inf on padding keys
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)  # (B, H, N, d)
        return _linear(self.o, out.transpose(1, 2).reshape(b, n, -1))


class UMT5LayerSelfAttention(nn.Module):
    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.SelfAttention = UMT5Attention(c, ops)
        self.layer_norm = ops.RMSNorm(c.dim, eps=c.eps)  # T5's norm: RMS, no mean, no bias; run in fp32

    def forward(self, x, buckets, key_bias):
        return x + self.SelfAttention(self.layer_norm(x.float()), buckets, key_bias).float()


class UMT5DenseGatedGelu(nn.Module):
    """Gated feed-forward: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.wi_0 = ops.Linear(c.dim, c.ffn_dim, bias=False)
        self.wi_1 = ops.Linear(c.dim, c.ffn_dim, bias=False)
        self.wo = ops.Linear(c.ffn_dim, c.dim, bias=False)

    def forward(self, x):
        gate = F.gelu(_linear(self.wi_0, x).float(), approximate="tanh")
        h = gate * _linear(self.wi_1, x).float()  # (B, N, F); can exceed fp16's range
        return _linear(self.wo, h, fp16_in_fp32=True)


class UMT5LayerFF(nn.Module):
    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.DenseReluDense = UMT5DenseGatedGelu(c, ops)
        self.layer_norm = ops.RMSNorm(c.dim, eps=c.eps)

    def forward(self, x):
        return x + self.DenseReluDense(self.layer_norm(x.float())).float()


class UMT5Block(nn.Module):
    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.layer = nn.ModuleList([UMT5LayerSelfAttention(c, ops), UMT5LayerFF(c, ops)])

    def forward(self, x, buckets, key_bias):
        return self.layer[1](self.layer[0](x, buckets, key_bias))


class UMT5Stack(nn.Module):
    def __init__(self, c: UMT5Config, ops=TORCH):
        super().__init__()
        self.block = nn.ModuleList(UMT5Block(c, ops) for _ in range(c.layers))
        self.final_layer_norm = ops.RMSNorm(c.dim, eps=c.eps)


def relative_position_buckets(n: int, num_buckets: int, max_distance: int, device=None) -> torch.Tensor:
    """T5's bidirectional buckets of (key - query) offsets: exact up to num_buckets/4, then log-spaced. (N, N) long."""
    pos = torch.arange(n, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    # clamp only keeps log() finite where the exact branch is taken anyway
    log = torch.log(rel.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    large = torch.clamp(exact + log.long(), max=half - 1)
    return buckets + torch.where(rel < exact, rel, large)


class UMT5Encoder(nn.Module):
    """umt5 encoder stack; `encode(texts)` is Wan's text path when a tokenizer is attached. `ops`: the
    layer classes (`ops.TORCH`, or a host's that moves weights layer by layer)."""

    compute_device: torch.device | None = None  # set by a host that keeps some weights elsewhere (lowvram)

    def __init__(self, config: UMT5Config = UMT5Config(), tokenizer: SentencePieceUnigram | None = None, ops=TORCH):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.shared = ops.Embedding(config.vocab_size, config.dim)
        self.encoder = UMT5Stack(config, ops)

    @property
    def device(self) -> torch.device:
        """Where it computes (`encode` puts the token ids there)."""
        return self.compute_device or self.shared.weight.device

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, N) long, mask (B, N) bool (True = token, False = padding) -> hidden states (B, N, D) fp32."""
        b, n = ids.shape
        if mask is not None:
            if mask.shape != ids.shape:
                raise ValueError(f"mask has shape {tuple(mask.shape)}; it must match ids {tuple(ids.shape)}")
            if not mask.any(-1).all():
                raise ValueError("every sequence needs at least one unmasked token (the EOS)")
        x = self.shared(ids, out_dtype=torch.float32)  # (B, N, D), times the fp8 scale if any
        if self.shared.weight.dtype in FP8_DTYPES:
            x = torch.nan_to_num(x)  # fp8 files can hold NaN rows (ComfyUI does the same)
        c = self.config
        buckets = relative_position_buckets(n, c.num_buckets, c.max_distance, ids.device)
        key_bias = None
        if mask is not None and not mask.all():
            key_bias = torch.zeros(b, 1, 1, n, device=ids.device).masked_fill(~mask[:, None, None, :], float("-inf"))
        for block in self.encoder.block:
            x = block(x, buckets, key_bias)
        return self.encoder.final_layer_norm(x.float())

    @torch.no_grad()
    def encode(self, texts: list[str], text_len: int = TEXT_LEN) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (context (B, text_len, D) fp32, mask (B, text_len) bool), as Wan feeds its DiT.

        Rows past each prompt's EOS are zeros. Wan's DiT attends to all text_len rows (it passes no
        text mask), so the mask is for callers that want the lengths, not for Wan's cross-attention.
        """
        if self.tokenizer is None:
            raise ValueError("this umt5 encoder has no tokenizer; attach one (UMT5Encoder(config, tokenizer))")
        ids, mask = tokenize(self.tokenizer, texts, text_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.forward(ids, mask) * mask[..., None]  # (B, L, D), L = the longest prompt
        context = F.pad(hidden, (0, 0, 0, text_len - hidden.shape[1]))
        return context, F.pad(mask, (0, text_len - mask.shape[1]), value=False)


# --- Wan's prompt handling ------------------------------------------------------------------------

# ftfy.fix_text's deterministic fixes, which Wan runs on every prompt (its mojibake repair is not
# reproduced: it only changes text that was mis-decoded to begin with).
_TERMINAL_ESCAPE = re.compile(r"\033\[((?:\d|;)*)([a-zA-Z])")
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_LINE_BREAKS = re.compile("\r\n|\r|\u2028|\u2029|\u0085")
_LIGATURES = {ord(k): v for k, v in {
    "\u0132": "IJ", "\u0133": "ij", "\u0149": "\u02bcn", "\u01f1": "DZ", "\u01f2": "Dz", "\u01f3": "dz",
    "\u01c4": "D\u017d", "\u01c5": "D\u017e", "\u01c6": "d\u017e", "\u01c7": "LJ", "\u01c8": "Lj", "\u01c9": "lj",
    "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj", "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl",
    "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "\u017ft", "\ufb06": "st"}.items()}
_WIDTH = {0x3000: " ", **{i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
                          if unicodedata.normalize("NFKC", chr(i)) != chr(i)}}
_CONTROL = dict.fromkeys([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070),
                          0xFEFF, *range(0xFFF9, 0xFFFD)])


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning ('whitespace'): ftfy's fixes (HTML entities, curly quotes, full-width
    forms, Latin ligatures, control characters, NFC), HTML unescaped twice, whitespace runs -> one space."""
    if "<" not in text:  # ftfy unescapes HTML entities only in text that does not look like HTML
        text = html.unescape(text)
    text = _TERMINAL_ESCAPE.sub("", text)
    text = text.translate(_LIGATURES).translate(_WIDTH)
    text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
    text = _LINE_BREAKS.sub("\n", text).translate(_CONTROL)
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def tokenize(tokenizer: SentencePieceUnigram, texts: Sequence[str], text_len: int = TEXT_LEN
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> (ids (B, L) long, mask (B, L) bool), L = the longest prompt's token count.

    Wan's tokenization: cleaned prompt, EOS appended, at most text_len tokens with the EOS kept last,
    padded with the pad id. (Padding to text_len happens on the encoder's output instead: masked
    padding does not change the real tokens' states, so encoding it would only cost time.)
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of prompts, not one string")
    if not texts:
        raise ValueError("texts is empty: give at least one prompt (an empty string is a valid prompt)")
    if text_len < 1:
        raise ValueError(f"text_len={text_len} is not allowed: it must be at least 1")
    rows = []
    for text in texts:
        ids = tokenizer.encode(clean_prompt(text))
        rows.append(ids if len(ids) <= text_len else ids[: text_len - 1] + [tokenizer.eos_id])
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = True
    return ids, mask


# --- reading artists' files ------------------------------------------------------------------------

_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
# Keys a umt5 file may hold besides the encoder's own: its tokenizer, the tied copy of the
# embedding, and the scaled-fp8 markers and per-weight scales (which the loader consumes).
_EXTRA_SUFFIXES = (".scale_weight", ".scale_input", ".comfy_quant", ".weight_scale", ".input_scale")
_EXTRA_KEYS = ("spiece_model", "scaled_fp8", "encoder.embed_tokens.weight")


def expected_shapes(config: UMT5Config) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a umt5 encoder with this config and its shape (built on the meta device)."""
    with torch.device("meta"):
        model = UMT5Encoder(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def config_from_shapes(shapes: Mapping[str, Sequence[int]], source: str = "text encoder") -> UMT5Config:
    """Key -> shape of a file's tensors (Hugging Face umt5 encoder layout) -> its UMT5Config.

    Every encoder key must be there with the shape the derived config needs; anything else of the
    encoder's, a T5 (not umt5) layout, or a missing key is refused, naming the key and both shapes.
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}

    def need(key):
        if key not in shapes:
            raise ValueError(f"{source} is not a umt5 encoder in the Hugging Face layout: it has no {key!r}")
        return shapes[key]

    if "shared.weight" not in shapes and "encoder.block.0.layer.0.SelfAttention.q.weight" in shapes:
        if "encoder.embed_tokens.weight" in shapes:
            shapes["shared.weight"] = shapes["encoder.embed_tokens.weight"]
    if ("encoder.block.0.layer.1.DenseReluDense.wi.weight" in shapes
            and "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" not in shapes):
        raise ValueError(f"{source} is a T5 v1.0 encoder (one ungated `wi`), not umt5; Wan needs umt5-xxl")
    if "encoder.block.1.layer.0.SelfAttention.q.weight" in shapes and \
            "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes:
        raise ValueError(f"{source} is a T5 encoder (position bias only in block 0), not umt5; Wan needs umt5-xxl")
    vocab, dim = need("shared.weight")
    buckets, heads = need(_BIAS)
    inner = need("encoder.block.0.layer.0.SelfAttention.q.weight")[0]
    ffn = need("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")[0]
    layers = 0
    while f"encoder.block.{layers}.layer.0.SelfAttention.q.weight" in shapes:
        layers += 1
    if inner % heads:
        raise ValueError(f"{source}: attention width {inner} is not a multiple of its {heads} heads ({_BIAS})")
    config = UMT5Config(vocab_size=vocab, dim=dim, inner_dim=inner, heads=heads, ffn_dim=ffn, layers=layers,
                        num_buckets=buckets)

    want = expected_shapes(config)
    for key, shape in want.items():
        got = shapes.get(key)
        if got is None:
            raise ValueError(f"{source}: key {key!r} is missing (a umt5 encoder with {config.describe()} has it)")
        if got != shape:
            raise ValueError(f"{source}: {key!r} has shape {list(got)} in the file, but a umt5 encoder with "
                             f"{config.describe()} needs {list(shape)}")
    for key, got in shapes.items():
        if key in want or key in _EXTRA_KEYS or key.endswith(_EXTRA_SUFFIXES):
            continue
        if key.startswith("encoder."):
            raise ValueError(f"{source}: unexpected key {key!r} (shape {list(got)}) in a umt5 encoder")
    tied = shapes.get("encoder.embed_tokens.weight")
    if tied is not None and tied != want["shared.weight"]:
        raise ValueError(f"{source}: 'encoder.embed_tokens.weight' has shape {list(tied)} but 'shared.weight' "
                         f"has {list(want['shared.weight'])}; they are the same tied embedding")
    return config


def encoder_state_dict(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A umt5 file's tensors -> exactly the encoder's state dict: the tokenizer, the tied embedding
    copy, a decoder or lm_head of a full umt5 and the fp8 scales (the loader attaches those) dropped."""
    out = {k: v for k, v in tensors.items()
           if (k == "shared.weight" or k.startswith("encoder.")) and k not in _EXTRA_KEYS
           and not k.endswith(_EXTRA_SUFFIXES)}
    if "shared.weight" not in out and "encoder.embed_tokens.weight" in tensors:
        out["shared.weight"] = tensors["encoder.embed_tokens.weight"]
    return out


def load_umt5(path, *, tokenizer: SentencePieceUnigram | str | None = None, device="cpu",
              dtype: torch.dtype | None = None, ops=TORCH) -> UMT5Encoder:
    """umt5 from a single-file safetensors (Hugging Face encoder layout, any prefix; fp32 / fp16 / bf16 /
    scaled fp8), checked against the shapes, built on the meta device and filled from the mapped file.
    Its tokenizer: `tokenizer` (a SentencePieceUnigram, or a spiece.model file), else the file's own
    `spiece_model` tensor (`umt5_tokenizer`)."""
    header, ident = files.open_component(path, "text_encoder")
    shapes = files.component_shapes(header, ident)
    config = config_from_shapes(shapes, source=repr(str(path)))
    if not isinstance(tokenizer, SentencePieceUnigram):
        tokenizer = umt5_tokenizer(path, tokenizer)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the tokenizer ({tokenizer.source}) has {len(tokenizer)} pieces but {str(path)!r} embeds "
                         f"only {config.vocab_size}: they are not a pair")
    with torch.device("meta"):
        model = UMT5Encoder(config, tokenizer, ops)
    tied = "shared.weight" not in shapes  # a file may keep the embedding only under its tied name

    def ignore(key: str) -> bool:  # the decoder / lm_head of a full umt5, the tied copy of the embedding
        return not (key == "shared.weight" or key.startswith("encoder.")) or (key == "encoder.embed_tokens.weight"
                                                                              and not tied)

    return files.load_into(model, header, ident, device=device, dtype=dtype, ignore=ignore,
                           rename={"encoder.embed_tokens.weight": "shared.weight"} if tied else None)


def umt5_tokenizer(path, tokenizer_file=None) -> SentencePieceUnigram:
    """The tokenizer for the umt5 file `path`: the named spiece.model, else the file's `spiece_model` tensor
    (under any prefix), else a ValueError that says to name one."""
    if tokenizer_file is not None:
        return load_tokenizer(tokenizer_file=tokenizer_file)
    header = files.read_header(path)
    key = next((k for k in header.tensors if k == "spiece_model" or k.endswith(".spiece_model")), None)
    if key is None:
        raise ValueError(f"text encoder {str(path)!r} holds no `spiece_model` tensor (its tokenizer); name umt5's "
                         f"spiece.model (tokenizer=..., --tokenizer)")
    return SentencePieceUnigram.from_tensor(files.read_tensor(header, key), source=f"{str(path)!r} (spiece_model)")
