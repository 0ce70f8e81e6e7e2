"""Wan DiT and the Wan file loader: equal to diffusers' WanTransformer3DModel on tiny random files in
the original key layout, the released sizes' parameter counts, clear refusals, every stored dtype."""

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sora_core.__main__ import main
from sora_core.engine import sample_window
from sora_core.patch import check_frame_count
from sora_core.wan import files
from sora_core.wan.dit import RECIPES, WanDiT, WanDiTConfig, load_wan_dit

TINY = WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512, text_dim=64)  # head width 128, as in every release
ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "U8": 1}


def random_state(config: WanDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the original Wan layout, at scales where every path carries signal."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        if k.endswith("modulation"):
            state[k] = torch.randn(shape, generator=g) / config.dim ** 0.5
        elif "norm" in k and k.endswith("weight"):
            state[k] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            state[k] = 0.05 * torch.randn(shape, generator=g)
        else:
            state[k] = torch.randn(shape, generator=g) / math.prod(shape[1:]) ** 0.5
    return state


def write(path, state, metadata=None) -> str:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return str(path)


def header_only(path, tensors: dict[str, tuple[str, tuple]], metadata=None) -> str:
    """A safetensors file whose data section is a hole (sparse): full-size headers cost no disk or time."""
    entries, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = math.prod(shape) * ITEMSIZE[dtype]
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        entries["__metadata__"] = metadata
    raw = json.dumps(entries).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    return str(path)


def released_header(variant: str, dtype: str = "BF16", prefix: str = "") -> dict:
    with torch.device("meta"):
        state = WanDiT(WanDiTConfig.released(variant)).state_dict()
    return {prefix + k: (dtype, tuple(v.shape)) for k, v in state.items()}


def diffusers_reference(config: WanDiTConfig, state):
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = WanTransformer3DModel(
        patch_size=config.patch, num_attention_heads=config.heads, attention_head_dim=config.dim // config.heads,
        in_channels=config.in_channels, out_channels=config.out_channels, text_dim=config.text_dim,
        freq_dim=config.freq_dim, ffn_dim=config.ffn_dim, num_layers=config.layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=config.eps)
    model.load_state_dict(convert_wan_transformer_to_diffusers({k: v.clone() for k, v in state.items()}), strict=True)
    return model.eval()


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def inputs(channels: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, 3, 4, 6, generator=g)  # 3 latent frames of 2x3 tokens
    context = torch.randn(2, 7, TINY.text_dim, generator=g)
    return x, context


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    state = random_state(TINY)
    return write(tmp_path_factory.mktemp("wan") / "tiny.safetensors", state), state


# -- equal to the reference -------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [16, 48])  # Wan 2.1 / 2.2-14B latents, Wan 2.2 TI2V-5B latents
@pytest.mark.parametrize("per_frame", [False, True])
def test_equals_diffusers_for_one_t_per_sample_and_one_t_per_frame(tmp_path, channels, per_frame):
    config = WanDiTConfig(dim=256, layers=2, heads=2, ffn_dim=512, text_dim=64, in_channels=channels,
                          out_channels=channels)
    state = random_state(config, seed=channels)
    ours = load_wan_dit(write(tmp_path / "w.safetensors", state))
    reference = diffusers_reference(config, state)
    x, context = inputs(channels)
    if per_frame:  # given first frame at t = 0, as Wan 2.2 TI2V-5B conditions on an image
        t = torch.tensor([[0.0, 0.63, 0.63], [0.0, 0.999, 0.999]])
        timestep = (t * 1000).repeat_interleave(6, dim=1)  # diffusers takes one timestep per token
    else:
        t = torch.tensor([0.37, 0.912])
        timestep = t * 1000
    with torch.no_grad():
        got = ours(x, t, context)
        # Wan (and diffusers' pipeline) zero-pad the umt5 states to 512 tokens and attend to all of them.
        want = reference(x, timestep, F.pad(context, (0, 0, 0, 512 - 7)), return_dict=False)[0]
    assert got.shape == want.shape == (2, channels, 3, 4, 6)
    err = rel(got, want)
    print(f"channels={channels} per_frame={per_frame}: relative error {err:.2e}")
    assert err < 1e-5


def test_the_state_dict_is_exactly_the_original_wan_layout():
    with torch.device("meta"):
        keys = set(WanDiT(TINY).state_dict())
    block = {f"blocks.0.{k}" for k in [
        *(f"{a}.{p}.{w}" for a in ("self_attn", "cross_attn") for p in "qkvo" for w in ("weight", "bias")),
        *(f"{a}.norm_{p}.weight" for a in ("self_attn", "cross_attn") for p in "qk"),
        "norm3.weight", "norm3.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias", "modulation"]}
    top = {f"{m}.{w}" for m in ("patch_embedding", "text_embedding.0", "text_embedding.2", "time_embedding.0",
                                "time_embedding.2", "time_projection.1", "head.head") for w in ("weight", "bias")}
    assert keys == top | {"head.modulation"} | block | {k.replace("blocks.0.", "blocks.1.") for k in block}


def test_a_context_mask_equals_trimming_the_padding(tiny_file):
    path, _ = tiny_file
    dit = load_wan_dit(path)
    x, context = inputs(16)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        masked = dit(x, t, context, mask)
        trimmed = dit(x[1:], t[1:], context[1:, :4])
    assert torch.allclose(masked[1:], trimmed, rtol=1e-5, atol=1e-5)  # float rounding differs with batch size
    with pytest.raises(ValueError, match="context has shape"):
        dit(x, t, torch.randn(2, 513, TINY.text_dim))


# -- released sizes -------------------------------------------------------------------------------

PUBLISHED = {"wan2.1-t2v-1.3B": 1_418_996_800, "wan2.2-ti2v-5B": 4_999_787_712, "wan-t2v-14B": 14_288_491_584}


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_released_sizes_built_on_meta_have_the_published_parameter_counts(variant):
    with torch.device("meta"):
        model = WanDiT(WanDiTConfig.released(variant))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[variant]


@pytest.mark.parametrize("variant,dtype,prefix,latent,heads", [
    ("wan2.1-t2v-1.3B", "F16", "", 16, 12),
    ("wan2.2-ti2v-5B", "BF16", "model.diffusion_model.", 48, 24),
    ("wan-t2v-14B", "F8_E4M3", "", 16, 40),
])
def test_describe_tells_the_variant_from_shapes_alone(tmp_path, variant, dtype, prefix, latent, heads):
    path = header_only(tmp_path / "renamed.safetensors", released_header(variant, dtype, prefix))
    info = files.describe(path)
    assert (info["family"], info["kind"], info["variant"], info["supported"]) == ("wan", "diffusion_model", variant, True)
    assert info["parameters"] == PUBLISHED[variant]
    assert info["prefix"] == prefix and info["dtypes"] == {dtype: PUBLISHED[variant]}
    assert info["config"]["out_channels"] == latent and info["config"]["heads"] == heads
    assert info["defaults"]["frames"] == RECIPES[variant].frames


def test_image_to_video_files_are_recognised_and_refused(tmp_path):
    tensors = released_header("wan-t2v-14B")
    tensors["patch_embedding.weight"] = ("BF16", (5120, 36, 1, 2, 2))
    v22 = header_only(tmp_path / "a.safetensors", tensors)
    tensors |= {"img_emb.proj.1.weight": ("BF16", (1280, 1280))}
    v21 = header_only(tmp_path / "b.safetensors", tensors)
    for path, variant in ((v21, "wan2.1-i2v-14B"), (v22, "wan2.2-i2v-A14B")):
        info = files.describe(path)
        assert info["variant"] == variant and not info["supported"]
        with pytest.raises(ValueError, match=f"{variant}.*not supported yet"):
            load_wan_dit(path)


def test_recipes_are_valid_sizes():
    for name, r in RECIPES.items():
        check_frame_count(r.frames, 4)
        assert r.width % r.pixel_multiple == 0 and r.height % r.pixel_multiple == 0, name
    assert (RECIPES["wan2.1-t2v-1.3B"].width, RECIPES["wan2.2-ti2v-5B"].height) == (832, 704)


# -- refusals -------------------------------------------------------------------------------------

def test_one_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    state = random_state(TINY)
    state["blocks.1.ffn.0.weight"] = torch.zeros(513, 256)
    with pytest.raises(ValueError) as err:
        load_wan_dit(write(tmp_path / "bad.safetensors", state))
    assert "blocks.1.ffn.0.weight" in str(err.value) and "[513, 256]" in str(err.value) and "[512, 256]" in str(err.value)


def test_missing_and_unexpected_tensors_are_listed(tmp_path):
    state = random_state(TINY)
    del state["blocks.1.norm3.bias"], state["head.head.bias"]
    state["blocks.0.extra.weight"] = torch.zeros(2)
    with pytest.raises(ValueError) as err:
        load_wan_dit(write(tmp_path / "bad.safetensors", state))
    msg = str(err.value)
    assert "2 missing tensor(s): blocks.1.norm3.bias, head.head.bias" in msg
    assert "1 unexpected tensor(s): blocks.0.extra.weight" in msg


def test_gguf_and_pickles_are_named_and_refused_unopened(tmp_path):
    gguf = tmp_path / "model.safetensors"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    zipped = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, zipped)
    raw = tmp_path / "model.bin"
    raw.write_bytes(pickle.dumps({"w": 1}, protocol=4))
    for path, what in ((gguf, "GGUF"), (zipped, "zip archive"), (raw, r"Python pickle \(protocol 4\)")):
        for fn in (files.describe, load_wan_dit):
            with pytest.raises(ValueError, match=what) as err:
                fn(path)
            assert str(path) in str(err.value) and "safetensors" in str(err.value)


def test_other_families_are_named(tmp_path, micro_checkpoint):
    vae = header_only(tmp_path / "vae.safetensors", {
        "decoder.middle.0.residual.0.gamma": ("BF16", (384, 1, 1, 1)), "encoder.conv1.weight": ("BF16", (160, 12, 3, 3, 3)),
        "conv1.weight": ("BF16", (96, 96, 1, 1, 1)), "conv2.weight": ("BF16", (48, 48, 1, 1, 1))})
    flux = header_only(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": ("BF16", (9216, 3072))})
    cases = ((vae, r"wan VAE \(wan2.2-vae\)"), (flux, "Flux"), (micro_checkpoint, "sora-nodes checkpoint"))
    for path, what in cases:
        with pytest.raises(ValueError, match=f"is .*{what}.*not a diffusion model"):
            load_wan_dit(path)


def test_unknown_quantisations_are_refused(tmp_path):
    state = random_state(TINY)
    stray = write(tmp_path / "a.safetensors", state | {"blocks.0.ffn.0.weight_scale": torch.ones(())})
    int8 = write(tmp_path / "b.safetensors", state | {"blocks.0.ffn.0.weight": torch.zeros(512, 256, dtype=torch.int8)})
    nvfp4 = write(tmp_path / "c.safetensors", state, {"_quantization_metadata": json.dumps(
        {"layers": {"blocks.0.ffn.0": {"format": "nvfp4"}}})})
    for path, what in ((stray, "scaling is unknown"), (int8, "blocks.0.ffn.0.weight is I8"), (nvfp4, "'nvfp4'")):
        with pytest.raises(ValueError, match=what):
            load_wan_dit(path)


# -- stored dtypes --------------------------------------------------------------------------------

def test_loading_maps_the_file_instead_of_copying_it(tiny_file):
    path, state = tiny_file
    dit = load_wan_dit(path)
    size = files.read_header(path).size
    # Every weight is a view of the one mapping of the whole file, in its stored dtype.
    assert all(p.untyped_storage().nbytes() == size and p.dtype == torch.float32 for p in dit.parameters())
    assert torch.equal(dit.blocks[1].ffn[2].weight, state["blocks.1.ffn.2.weight"])


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_files_match_fp32_within_their_precision(tmp_path, tiny_file, dtype, tolerance):
    path, state = tiny_file
    half = load_wan_dit(write(tmp_path / "h.safetensors", {k: v.to(dtype) for k, v in state.items()}))
    assert half.activation_dtype() == dtype and half.blocks[0].self_attn.q.weight.dtype == dtype
    x, context = inputs(16)
    t = torch.tensor([0.2, 0.8])
    with torch.no_grad():
        err = rel(half(x, t, context), load_wan_dit(path)(x, t, context))
    print(f"{dtype}: relative error vs fp32 {err:.2e}")
    assert err < tolerance


def test_a_prefixed_file_loads_to_identical_outputs(tmp_path, tiny_file):
    path, state = tiny_file
    prefixed = write(tmp_path / "p.safetensors", {"model.diffusion_model." + k: v for k, v in state.items()})
    x, context = inputs(16)
    t = torch.tensor([0.3, 0.6])
    with torch.no_grad():
        assert torch.equal(load_wan_dit(prefixed)(x, t, context), load_wan_dit(path)(x, t, context))


def _fp8(state, layout: str):
    """Quantise every 2-D block weight as ComfyUI does: w8 = (w / s).to(fp8), s = amax / 448 per tensor."""
    out, dequantised, layers = {}, dict(state), {}
    for k, v in state.items():
        if k.startswith("blocks.") and v.ndim == 2:
            layer = k[: -len(".weight")]
            scale = v.abs().amax() / 448.0
            w8 = (v / scale).to(torch.float8_e4m3fn)
            dequantised[k] = w8.float() * scale
            if layout == "scaled_fp8":
                out |= {k: w8, f"{layer}.scale_weight": scale, f"{layer}.scale_input": torch.ones(())}
            else:  # ComfyUI's newer layout: fp8 kept in a U8 container, the format in the metadata
                out |= {k: w8.view(torch.uint8), f"{layer}.weight_scale": scale, f"{layer}.input_scale": torch.ones(())}
                layers[layer] = {"format": "float8_e4m3fn"}
        else:
            out[k] = v.to(torch.bfloat16)
            dequantised[k] = out[k].float()
    if layout == "scaled_fp8":
        return out | {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, None, dequantised
    return out, {"_quantization_metadata": json.dumps({"layers": layers})}, dequantised


@pytest.mark.parametrize("layout", ["scaled_fp8", "comfy_quant"])
def test_scaled_fp8_stays_fp8_and_computes_with_the_scaled_weights(tmp_path, tiny_file, layout):
    path, state = tiny_file
    quantised, metadata, dequantised = _fp8(state, layout)
    fp8 = load_wan_dit(write(tmp_path / "q.safetensors", quantised, metadata), compute_dtype=torch.float32)
    assert files.describe(tmp_path / "q.safetensors")["quantization"] == layout
    layer = fp8.blocks[1].ffn[0]
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_scale.shape == ()
    exact = load_wan_dit(write(tmp_path / "d.safetensors", dequantised))
    x, context = inputs(16)
    t = torch.tensor([0.4, 0.9])
    with torch.no_grad():
        got = fp8(x, t, context)
        same_weights = rel(got, exact(x, t, context))
        vs_fp32 = rel(got, load_wan_dit(path)(x, t, context))
        bf16 = rel(load_wan_dit(tmp_path / "q.safetensors")(x, t, context), exact(x, t, context))
    print(f"{layout}: vs dequantised fp32 {same_weights:.2e}, bf16 compute {bf16:.2e}, vs original fp32 {vs_fp32:.2e}")
    assert same_weights < 1e-6 and bf16 < 3e-2 and vs_fp32 < 0.1


def test_plain_fp8_stays_fp8_and_computes_with_its_stored_values(tmp_path, tiny_file):
    """ComfyUI's `*_fp8_e4m3fn.safetensors` (no scales): the block weights cast to fp8 as they are."""
    path, state = tiny_file
    plain = {k: v.to(torch.float8_e4m3fn) if k.startswith("blocks.") and v.ndim == 2 else v for k, v in state.items()}
    fp8 = load_wan_dit(write(tmp_path / "f8.safetensors", plain), compute_dtype=torch.float32)
    assert "F8_E4M3" in files.describe(tmp_path / "f8.safetensors")["dtypes"]
    assert fp8.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn and fp8.blocks[0].self_attn.q.weight_scale is None
    exact = load_wan_dit(write(tmp_path / "d.safetensors", {k: v.float() for k, v in plain.items()}))
    x, context = inputs(16)
    t = torch.tensor([0.4, 0.9])
    with torch.no_grad():
        same_weights = rel(fp8(x, t, context), exact(x, t, context))
        vs_fp32 = rel(fp8(x, t, context), load_wan_dit(path)(x, t, context))
        assert load_wan_dit(tmp_path / "f8.safetensors").activation_dtype() == torch.bfloat16  # fp8 computes in bf16
    print(f"plain fp8: vs its own values in fp32 {same_weights:.2e}, vs the original fp32 {vs_fp32:.2e}")
    assert same_weights < 1e-6 and vs_fp32 < 0.1


# -- sampling and inspect --------------------------------------------------------------------------

def test_the_samplers_drive_it_through_the_engine_with_the_familys_timesteps(tiny_file):
    path, _ = tiny_file
    dit = load_wan_dit(path)
    x, context = inputs(16)
    assert not dit.per_frame_t and dit.recipe == RECIPES["wan2.1-t2v-1.3B"]  # a custom size of 16 channels: Wan 2.1's
    for variant, per_frame in (("wan2.2-ti2v-5B", True), ("wan-t2v-14B", False), ("wan2.1-t2v-1.3B", False)):
        dit.variant = variant
        assert dit.per_frame_t == per_frame
    strength = torch.tensor([[0.0, 1.0, 1.0]] * 2)
    text = (context[:1], torch.ones(1, 7, dtype=torch.bool))
    out = sample_window(dit, x, strength, text, None, steps=3, shift=5.0, cfg=1.0)
    assert torch.isfinite(out).all() and torch.equal(out[:, :, 0], x[:, :, 0]) and not torch.equal(out, x)


def test_describe_reads_vaes_and_umt5_from_shapes(tmp_path):
    def vae(image_channels, z):
        return {"decoder.middle.0.residual.0.gamma": ("BF16", (384, 1, 1, 1)),
                "encoder.conv1.weight": ("BF16", (96, image_channels, 3, 3, 3)),
                "conv1.weight": ("BF16", (2 * z, 2 * z, 1, 1, 1)), "conv2.weight": ("BF16", (z, z, 1, 1, 1))}

    def t5(vocab, per_layer_bias, spiece=False):
        tensors = {"shared.weight": ("BF16", (vocab, 4096))}
        for i in range(24):
            b = f"encoder.block.{i}.layer."
            tensors |= {b + f"0.SelfAttention.{p}.weight": ("BF16", (4096, 4096)) for p in "qkvo"}
            if per_layer_bias or i == 0:
                tensors[b + "0.SelfAttention.relative_attention_bias.weight"] = ("BF16", (32, 64))
            tensors |= {b + "1.DenseReluDense.wi_0.weight": ("BF16", (10240, 4096)),
                        b + "1.DenseReluDense.wi_1.weight": ("BF16", (10240, 4096)),
                        b + "1.DenseReluDense.wo.weight": ("BF16", (4096, 10240))}
        return tensors | ({"spiece_model": ("U8", (4_548_313,))} if spiece else {})

    cases = [(vae(3, 16), ("vae", "wan2.1-vae", True)), (vae(12, 48), ("vae", "wan2.2-vae", True)),
             (t5(256384, True, spiece=True), ("text_encoder", "umt5-xxl", True)),
             (t5(32128, False), ("text_encoder", "t5", False))]
    for i, (tensors, (kind, variant, supported)) in enumerate(cases):
        info = files.describe(header_only(tmp_path / f"{i}.safetensors", tensors))
        assert (info["kind"], info["variant"], info["supported"]) == (kind, variant, supported)
    assert files.describe(tmp_path / "1.safetensors")["config"]["latent_channels"] == 48
    umt5 = files.describe(tmp_path / "2.safetensors")
    assert umt5["config"]["spiece_model"] and umt5["config"]["heads"] == 64
    assert umt5["parameters"] == 256384 * 4096 + 24 * (4 * 4096 ** 2 + 32 * 64 + 3 * 10240 * 4096)


def test_inspect_prints_the_description(tiny_file, capsys, micro_checkpoint):
    path, _ = tiny_file
    assert main(["inspect", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["family"], info["variant"], info["parameters"]) == ("wan", "custom", sum(
        math.prod(s.shape) for s in files.read_header(path).tensors.values()))
    assert main(["inspect", micro_checkpoint]) == 0
    out = capsys.readouterr().out
    assert "family:       sora-nodes" in out and "kind:         checkpoint" in out and "parameters:" in out


def test_sora_core_never_imports_diffusers_or_transformers():
    root = Path(__file__).resolve().parents[1] / "sora_core"
    pattern = re.compile(r"^\s*(from|import)\s+(diffusers|transformers)\b", re.M)
    offenders = [str(f.relative_to(root)) for f in root.rglob("*.py") if pattern.search(f.read_text(encoding="utf-8"))]
    assert offenders == []
