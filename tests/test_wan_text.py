"""Wan's text encoder: our umt5 against transformers' UMT5EncoderModel on the same weights, and our
SentencePiece tokenizer against the sentencepiece library on unigram models trained here."""

from __future__ import annotations

import functools
import html
import io
import random
import re

import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file
from transformers import UMT5Config as HFConfig
from transformers import UMT5EncoderModel

from sora_core.wan.tokenizer import SentencePieceUnigram, load_tokenizer
from sora_core.wan.umt5 import (
    UMT5Config, UMT5Encoder, clean_prompt, config_from_shapes, encoder_state_dict, expected_shapes, tokenize,
)

# --- tokenizer -------------------------------------------------------------------------------------

_SYLLABLES = ["ka", "to", "ri", "ne", "mu", "sha", "qu", "é", "ü", "ñ", "ß", "œ", "th", "Zo", "Ca", "AI", "4k",
              "東", "京", "猫", "犬", "山", "日本", "語", "テ", "スト", "한", "국", "어", "при", "вет", "م", "ر",
              "😀", "🚀", "12", "3.14", "2025", "ｆｕ", "ﬁ", "a\u0301"]


def _corpus(n: int = 4000) -> list[str]:
    rng = random.Random(0)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(2000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 14))) + rng.choice([".", ",", "!", ""])
            for _ in range(n)]


@functools.cache
def _spm_model(**options) -> bytes:
    """A small unigram model from sentencepiece's own trainer, with T5's special ids (pad 0, eos 1, bos 2, unk 3)."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()), model_writer=out, model_type="unigram", vocab_size=1500,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, hard_vocab_limit=False, num_threads=1, minloglevel=2, **options)
    return out.getvalue()


def _test_strings() -> list[str]:
    fixed = [
        "", " ", "   \t\n ", "Hello world", "  leading, inner   runs   and trailing  ", "tab\there\nnew line\r\nCRLF",
        "東京の猫が山を走る。", "한국어 텍스트", "привет мир", "مرحبا", "emoji 😀🚀🦙 and 👨‍👩‍👧 family",
        "digits 0123456789 3.14159 1e-9",
        "ＦＵＬＬ　ｗｉｄｔｈ　１２３", "ﬁne ﬂow ligatures", "café naïve résumé Zoë ñandú straße œuvre", "a\u0301 e\u0301 combining",
        "unknown ŧħ€ ɸ ʭ ⺀ 𝔘𝔫𝔦 chars", "ctrl\x00\x07\x1b[31m\x7f", "\u00a0nbsp\u200bzero\u2009thin\u3000ideo", "<0x41> </s> <unk> <pad>",
        "<my> user <my>symbol<my>", "cat dog cat  dog", "ÅÅÅ" * 20, "x" * 300,
        "A cinematic shot of a cat, 4k, slow motion.",
    ]
    rng = random.Random(1)
    pool = list("aeiouktnrsm AEZ.,!?\t\n") + _SYLLABLES + [" ", "  ", "\u3000", "\u00a0", "<my>", "é", "😀", "ÿ", "Ω", "€", "\ufffd"]
    return fixed + ["".join(rng.choice(pool) for _ in range(rng.randint(1, 40))) for _ in range(500)] + _corpus()[:200]


# umt5's tokenizer is a unigram model with byte fallback; the normaliser variants cover what a spec can ask for.
SPM_OPTIONS = {
    "umt5-like (nmt_nfkc, byte fallback)": dict(byte_fallback=True, normalization_rule_name="nmt_nfkc"),
    "identity, byte fallback": dict(byte_fallback=True, normalization_rule_name="identity"),
    "nmt_nfkc, no byte fallback (unknown runs merged)": dict(normalization_rule_name="nmt_nfkc", character_coverage=0.98),
    "nfkc_cf, user-defined symbols": dict(byte_fallback=True, normalization_rule_name="nfkc_cf",
                                          user_defined_symbols="<my>,cat dog"),
    "no dummy prefix, whitespace kept": dict(byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False),
    "whitespace as suffix": dict(treat_whitespace_as_suffix=True, byte_fallback=True),
}


@pytest.mark.parametrize("name", SPM_OPTIONS)
def test_tokenizer_matches_sentencepiece(name):
    proto = _spm_model(**SPM_OPTIONS[name])
    ref = spm.SentencePieceProcessor(model_proto=proto)
    ours = SentencePieceUnigram(proto)
    assert len(ours) == ref.get_piece_size() and ours.eos_id == ref.eos_id() == 1 and ours.pad_id == ref.pad_id() == 0
    strings = _test_strings()
    mismatches = [s for s in strings if ours.encode(s) != ref.encode(s, add_eos=True)]
    assert not mismatches, f"{len(mismatches)}/{len(strings)} differ, e.g. {mismatches[:3]}"
    # the test exercises what it claims: unknown characters, and (where on) byte pieces
    all_ids = {i for s in strings for i in ours.encode(s)}
    byte_ids = {i for i in range(len(ours)) if ours.spec.types[i] == 6}
    assert (ours.unk_id in all_ids) != bool(ours.spec.byte_fallback)
    assert bool(all_ids & byte_ids) == bool(ours.spec.byte_fallback)


def test_tokenizer_from_the_files_spiece_model_tensor(tmp_path):
    """ComfyUI stores the tokenizer in umt5 files as `spiece_model`: the serialized model as a uint8 tensor."""
    proto = _spm_model(**SPM_OPTIONS["umt5-like (nmt_nfkc, byte fallback)"])
    path = tmp_path / "umt5_tiny.safetensors"
    save_file({"spiece_model": torch.frombuffer(bytearray(proto), dtype=torch.uint8),
               "shared.weight": torch.zeros(4, 2)}, str(path))
    tok = load_tokenizer(path)
    ref = spm.SentencePieceProcessor(model_proto=proto)
    for s in _test_strings()[:100]:
        assert tok.encode(s) == ref.encode(s, add_eos=True)
    # a tokenizer file the user names wins over the embedded one
    other = _spm_model(**SPM_OPTIONS["identity, byte fallback"])
    (tmp_path / "spiece.model").write_bytes(other)
    assert load_tokenizer(path, tmp_path / "spiece.model").spec.normalizer == "identity"

    save_file({"shared.weight": torch.zeros(4, 2)}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match=r"bare\.safetensors.*no `spiece_model`.*spiece\.model"):
        load_tokenizer(tmp_path / "bare.safetensors")


def test_tokenizer_refuses_what_it_does_not_support(tmp_path):
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(_corpus(500)), model_writer=out, model_type="bpe",
                                   vocab_size=400, hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(ValueError, match="BPE model; only unigram"):
        SentencePieceUnigram(out.getvalue())
    with pytest.raises(ValueError, match="is not a sentencepiece model"):
        SentencePieceUnigram(b"\xff\xff\xff\xff not a proto")
    with pytest.raises(ValueError, match="tokenizer.json.*spiece.model"):
        SentencePieceUnigram.from_file(tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="1-D uint8"):
        SentencePieceUnigram.from_tensor(torch.zeros(3, dtype=torch.float32))


# --- umt5 encoder ----------------------------------------------------------------------------------

def _hf_umt5(vocab: int = 64, seed: int = 0) -> UMT5EncoderModel:
    torch.manual_seed(seed)
    config = HFConfig(vocab_size=vocab, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=3,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", dropout_rate=0.0)
    model = UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.2)  # HF initialises the norms to 1; make them matter
    return model


def _ours(tensors: dict[str, torch.Tensor], tokenizer=None) -> UMT5Encoder:
    """What the loader does: config from the shapes, build on the meta device, assign the stored tensors."""
    config = config_from_shapes({k: v.shape for k, v in tensors.items()})
    with torch.device("meta"):
        model = UMT5Encoder(config, tokenizer)
    model.load_state_dict(encoder_state_dict(tensors), assign=True)
    for key, scale in tensors.items():  # scaled fp8: the loader attaches each weight's scale to its layer
        if key.endswith(".scale_weight"):
            model.get_submodule(key[: -len(".scale_weight")]).register_buffer("weight_scale", scale)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_umt5_matches_transformers_with_and_without_padding():
    hf = _hf_umt5()
    ours = _ours(hf.state_dict())
    assert ours.config == UMT5Config(vocab_size=64, dim=32, inner_dim=32, heads=4, ffn_dim=48, layers=3)
    ids = torch.randint(0, 64, (3, 150), generator=torch.Generator().manual_seed(0))  # > 128: every bucket range
    mask = torch.ones(3, 150, dtype=torch.bool)
    mask[1, 100:] = False
    mask[2, 7:] = False
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
        assert _rel(ours(ids), ref) < 1e-5
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = ours(ids, mask)
    assert _rel(out, ref) < 1e-5  # padded positions too (they attend to the real tokens only)
    assert _rel(out[mask], ref[mask]) < 1e-5
    # masking is real: the short row differs from what it would be without its mask
    assert _rel(out[2, :7], ours(ids[2:3])[0, :7].detach()) > 1e-3


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_umt5_half_precision_files(tmp_path, dtype, tol):
    hf = _hf_umt5()
    sd = hf.state_dict()
    path = tmp_path / f"umt5_{dtype}.safetensors"
    save_file({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(path))
    ours = _ours(load_file(str(path)))
    assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == dtype  # stored dtype, not upcast
    ids = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = ours(ids, mask)
    assert out.dtype == torch.float32 and _rel(out, ref) < tol


def test_umt5_fp16_survives_activations_beyond_fp16_range():
    """T5's gated FFN outgrows fp16 (65504); the fp16 model must still match fp32."""
    sd = _hf_umt5().state_dict()
    for key in ("encoder.block.1.layer.1.DenseReluDense.wi_0.weight", "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"):
        sd[key] = sd[key] * 150
    ref_model, half = _ours(dict(sd)), _ours({k: v.half() for k, v in sd.items()})
    ffn = ref_model.encoder.block[1].layer[1].DenseReluDense
    inputs = []
    handle = ffn.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    ids = torch.randint(0, 64, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, out = ref_model(ids), half(ids)
        handle.remove()
        x = inputs[0]
        gated = torch.nn.functional.gelu(x @ ffn.wi_0.weight.T, approximate="tanh") * (x @ ffn.wi_1.weight.T)
    assert gated.abs().max() > 65504  # the premise: an fp16 product would overflow here
    assert torch.isfinite(out).all() and _rel(out, ref) < 5e-3


def test_umt5_scaled_fp8_file(tmp_path):
    """umt5_xxl_fp8_e4m3fn_scaled: fp8 linear weights, each with a `scale_weight`, and a `scaled_fp8` marker."""
    sd = _hf_umt5().state_dict()
    stored, dequantized = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if v.dim() == 2 and k.startswith("encoder.block") and "relative_attention_bias" not in k:
            scale = v.abs().max() / 448
            q = (v / scale).to(torch.float8_e4m3fn)
            stored[k], stored[k[: -len(".weight")] + ".scale_weight"] = q, scale.reshape(())
            dequantized[k] = q.float() * scale
        else:
            stored[k] = dequantized[k] = v.half() if v.dim() == 2 else v
    save_file({k: v.contiguous() for k, v in stored.items()}, str(tmp_path / "fp8.safetensors"))
    fp8 = _ours(load_file(str(tmp_path / "fp8.safetensors")))
    assert fp8.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float8_e4m3fn
    ref = _ours({k: v.float() for k, v in dequantized.items()})
    ids = torch.randint(0, 64, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _rel(fp8(ids), ref(ids)) < 2e-2  # bf16 matmuls on the dequantized weights


def test_config_from_shapes_full_size_and_errors():
    full = expected_shapes(UMT5Config())
    assert config_from_shapes(full) == UMT5Config()
    params = sum(torch.Size(s).numel() for s in full.values())
    assert abs(params - 5.68e9) < 0.01e9  # umt5-xxl's encoder: 5.68B (its fp16 file is 11.4 GB)

    shapes = {k: tuple(v.shape) for k, v in _hf_umt5().state_dict().items()}
    shapes["spiece_model"] = (1234,)  # the tokenizer rides along and is not a weight
    assert config_from_shapes(shapes).layers == 3
    bad = dict(shapes, **{"encoder.block.1.layer.1.DenseReluDense.wo.weight": (32, 40)})
    with pytest.raises(ValueError, match=re.escape("'encoder.block.1.layer.1.DenseReluDense.wo.weight' has shape "
                                                   "[32, 40] in the file") + ".*needs " + re.escape("[32, 48]")):
        config_from_shapes(bad)
    missing = {k: v for k, v in shapes.items() if k != "encoder.block.2.layer.0.layer_norm.weight"}
    with pytest.raises(ValueError, match="'encoder.block.2.layer.0.layer_norm.weight' is missing"):
        config_from_shapes(missing)
    t5 = {k: v for k, v in shapes.items() if not ("relative_attention_bias" in k and "block.0." not in k)}
    with pytest.raises(ValueError, match="T5 encoder .position bias only in block 0., not umt5"):
        config_from_shapes(t5)
    with pytest.raises(ValueError, match="not a umt5 encoder.*'shared.weight'"):
        config_from_shapes({"blocks.0.self_attn.q.weight": (8, 8)}, source="wan_dit.safetensors")


# --- Wan's text path -------------------------------------------------------------------------------

def _wan_clean(text: str) -> str:
    """Wan's own cleaning (wan/modules/tokenizers.py, clean='whitespace')."""
    ftfy = pytest.importorskip("ftfy")
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


def test_clean_prompt_is_wans_cleaning():
    prompts = [
        "A cat  on a\tmat\n", "“Curly” ‘quotes’ and it’s", "色调艳丽，过曝，静态，细节模糊不清，字幕", "ＦＵＬＬ　ｗｉｄｔｈ！",
        "ﬁne ﬂowers", "Tom &amp; Jerry &lt;3 &quot;hi&quot; &amp;amp;", "<b>bold</b> &amp; tags", "line\r\nbreaks\u2028here",
        "ctrl\x00\x07chars\ufeff", "e\u0301 composed", "\x1b[31mred\x1b[0m text", "   ", "", "emoji 😀 ok",
        "Ĳssel ǅemal", "ｶﾀｶﾅ halfwidth",
    ]
    for p in prompts:
        assert clean_prompt(p) == _wan_clean(p), p


def test_wan_text_path_matches_the_reference():
    """Wan: tokens + EOS, padded to text_len, encoded with the mask, cut to length, zero-padded to text_len."""
    proto = _spm_model(**SPM_OPTIONS["umt5-like (nmt_nfkc, byte fallback)"])
    tok = SentencePieceUnigram(proto)
    hf = _hf_umt5(vocab=len(tok))
    ours = _ours(hf.state_dict(), tok)
    text_len = 160
    prompts = ["A cinematic shot of a 猫 running, 4k.", "",
               "A slow pan over a misty mountain lake at dawn, birds, reflections, " * 12]  # truncated
    context, mask = ours.encode(prompts, text_len=text_len)
    assert context.shape == (3, text_len, 32) and mask.shape == (3, text_len)

    ref_ids = torch.zeros(3, text_len, dtype=torch.long)
    ref_mask = torch.zeros(3, text_len, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids = spm.SentencePieceProcessor(model_proto=proto).encode(_wan_clean(p), add_eos=True)
        ids = ids[: text_len - 1] + [1] if len(ids) > text_len else ids  # HF truncation keeps the EOS
        ref_ids[i, : len(ids)], ref_mask[i, : len(ids)] = torch.tensor(ids), 1
    with torch.no_grad():
        ref = hf(input_ids=ref_ids, attention_mask=ref_mask).last_hidden_state * ref_mask[..., None]
    assert torch.equal(mask, ref_mask.bool())
    assert mask[1].sum() == 1 and mask[2].all()  # "" is just the EOS; the long prompt fills all rows
    assert _rel(context, ref) < 1e-5
    assert (context[~mask] == 0).all()
    alone, _ = ours.encode(prompts[:1], text_len=text_len)  # batching changes nothing
    assert _rel(alone[0], context[0]) < 1e-6


def test_tokenize_truncates_keeping_the_eos():
    tok = SentencePieceUnigram(_spm_model(**SPM_OPTIONS["umt5-like (nmt_nfkc, byte fallback)"]))
    long = " ".join(_corpus()[:10])
    full = tok.encode(clean_prompt(long))
    ids, mask = tokenize(tok, [long, "cat"], text_len=16)
    assert ids.shape == (2, 16) and ids[0].tolist() == full[:15] + [tok.eos_id]
    assert mask[1].sum() == len(tok.encode("cat")) and (ids[1][~mask[1]] == tok.pad_id).all()
    with pytest.raises(ValueError, match="list of prompts"):
        tokenize(tok, "one string")
    with pytest.raises(ValueError, match="text_len=0"):
        tokenize(tok, ["x"], text_len=0)
