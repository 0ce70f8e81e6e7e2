"""Wan files through the user-facing engine: tiny random files in the exact real key layouts
(Wan 2.1-style: 16 latent channels, one t per sample; Wan 2.2 TI2V-style: 48 channels, one t per
frame) run through `Pipeline` and the CLI; the one conditioning mechanism on both; the causal VAE's
history handled exactly; loaders of every stored variant; clear refusals of wrong or mismatched files."""

from __future__ import annotations

import math
import re

import pytest
import torch

from sora_core import conditioning as cond
from sora_core.__main__ import main
from sora_core.engine import sample_window, seeded_noise
from sora_core.io import read_video
from sora_core.pipeline import Pipeline
from sora_core.wan.dit import FAMILY_RECIPE, NEGATIVE_PROMPT, RECIPES, WanDiTConfig, load_wan_dit
from sora_core.wan.umt5 import UMT5Config, load_umt5
from sora_core.wan.vae import load_wan_vae
from sora_core.wan.vae import expected_shapes as expected_shapes_vae

from . import wan_files
from .test_wan_dit import random_state, write
from .test_wan_vae import write_random_file
from .wan_files import TEXT_DIM, spiece_model, tiny_dit, tiny_umt5, umt5_state

FAMILIES = {  # DiT channels, VAE config, the release whose recipe a custom size of this family takes
    family: (channels, vae, FAMILY_RECIPE[channels]) for family, (_, _, channels, vae) in wan_files.FAMILIES.items()
}
FAST = dict(steps=2, cfg=3.0, seed=5)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module")
def tokenizer_bytes():
    return spiece_model()


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory, tokenizer_bytes):
    """A tiny umt5 file as ComfyUI keeps it: the encoder's keys and the tokenizer as `spiece_model`."""
    state = umt5_state(tiny_umt5()) | {"spiece_model": torch.frombuffer(bytearray(tokenizer_bytes), dtype=torch.uint8)}
    return write(tmp_path_factory.mktemp("te") / "umt5_tiny.safetensors", state)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def wan(request, tmp_path_factory, text_encoder):
    """(family, DiT file, VAE file, text encoder file) of one tiny Wan family."""
    channels, vae_config, _ = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(f"wan{request.param}")
    dit = write(folder / "dit.safetensors", random_state(tiny_dit(channels), seed=channels))
    vae = write_random_file(folder / "vae.safetensors", vae_config)
    return request.param, dit, vae, text_encoder


@pytest.fixture(scope="module")
def pipe(wan):
    family, dit, vae, te = wan
    return Pipeline.load(dit, vae=vae, text_encoder=te)


def clip(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(seed))


# -- end to end -------------------------------------------------------------------------------

def test_generate_and_extend_run_a_wan_file_end_to_end(wan, pipe):
    family, *_ = wan
    recipe = RECIPES[FAMILIES[family][2]]
    assert pipe.family == "wan" and pipe.config.pixel_multiple == recipe.pixel_multiple
    assert (pipe.defaults.steps, pipe.defaults.cfg, pipe.defaults.shift, pipe.defaults.negative) == (
        recipe.steps, recipe.cfg, recipe.shift, NEGATIVE_PROMPT)
    assert pipe.dit.per_frame_t == (family == "2.2")
    video = pipe.generate("a red ball moving left", 32, 32, 9, **FAST)
    assert video.shape == (9, 32, 32, 3) and torch.isfinite(video).all() and video.std() > 0.01
    assert torch.equal(video, pipe.generate("a red ball moving left", 32, 32, 9, **FAST))  # seeded
    longer = pipe.extend(video, "the ball keeps moving", new_frames=4, context_frames=4, blend_frames=0, **FAST)
    assert longer.shape == (13, 32, 32, 3) and torch.equal(longer[:9], video)  # the clip, bit for bit
    back = pipe.extend(video, "x", new_frames=4, context_frames=4, direction="backward", blend_frames=0, **FAST)
    assert back.shape == (13, 32, 32, 3) and torch.equal(back[4:], video)


def test_decode_tile_zero_means_no_tiling_on_wan_as_on_the_shipped_model(pipe, capsys, tmp_path):
    assert torch.equal(pipe.generate("x", 32, 32, 5, decode_tile=0, **FAST), pipe.generate("x", 32, 32, 5, **FAST))
    assert main(["generate", "x", "-o", str(tmp_path / "x.png"), "--vae-tile", "-1", "--no-provenance"]) == 2
    assert capsys.readouterr().err == "error: --vae-tile=-1 is not allowed: use a number of latent cells (0: no tiling)\n"


def test_animate_loop_connect_and_edit_run_on_wan(pipe):
    video = clip(9)
    animated = pipe.animate(video[:1], "x", 5, **FAST)
    assert animated.shape == (5, 32, 32, 3)
    looped = pipe.loop(video, "x", transition_frames=4, context_frames=4, blend_frames=0, **FAST)
    assert looped.shape == (13, 32, 32, 3) and torch.equal(looped[:9], video)
    joined = pipe.connect(video, video.flip(0), "x", transition_frames=4, context_frames=4, blend_frames=0, **FAST)
    assert joined.shape == (22, 32, 32, 3) and torch.equal(joined[:9], video) and torch.equal(joined[13:], video.flip(0))
    edited = [pipe.edit(video, "x", strength=s, **FAST) for s in (0.0, 0.8)]
    assert edited[0].shape == (9, 32, 32, 3) and not torch.equal(edited[0], edited[1])


def test_the_cli_generates_and_extends_with_wan_files(wan, tmp_path):
    family, dit, vae, te = wan
    files = ["--model", dit, "--vae", vae, "--text-encoder", te, "--steps", 2, "--no-provenance", "--device", "cpu"]
    out, longer = tmp_path / "gen.png", tmp_path / "longer.png"  # animated PNG: lossless
    assert main([str(a) for a in ["generate", "a red ball", "-o", out, "--width", 32, "--height", 32,
                                  "--frames", 5, *files]]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (5, 32, 32, 3) and abs(fps - RECIPES[FAMILIES[family][2]].fps) < 0.5  # the model's fps
    assert main([str(a) for a in ["extend", out, "more", "-o", longer, "--new-frames", 4, "--context-frames", 4,
                                  "--blend-frames", 0, *files]]) == 0
    extended, _ = read_video(longer)
    assert extended.shape == (9, 32, 32, 3) and (extended[:5] == frames).all()


def test_animating_to_the_last_frame_gives_the_image_back_exactly_after_reencoding_it(pipe, monkeypatch):
    image = clip(1, seed=4)
    encoded = []
    encode = cond.encode_chunk_frames
    monkeypatch.setattr(cond, "encode_chunk_frames", lambda v, f, history=None: encoded.append(history) or encode(
        v, f, history=history))
    video = pipe.animate(image, "x", 9, at="last", blend_frames=2, **FAST)
    assert video.shape == (9, 32, 32, 3) and torch.equal(video[-1], image[0])
    # the held image estimated before sampling, then encoded after the 5 frames the window decodes to before it
    assert encoded[0] is None and encoded[1].shape == (1, 3, 5, 32, 32)


# -- the budget, before any work ------------------------------------------------------------------

def test_a_wan_request_over_the_budget_is_refused_before_any_work(pipe, monkeypatch):
    from sora_core.budget import Budget, BudgetError

    monkeypatch.delenv("SORA_MAX_TOKENS", raising=False)
    monkeypatch.setattr(cond, "empty_window", lambda *a: pytest.fail("allocated the latent"))
    monkeypatch.setattr(pipe, "encode_texts", lambda *a: pytest.fail("encoded the prompt"))
    per_frame = pipe.config.vae.spatial_factor * 2
    with pytest.raises(BudgetError, match=rf"^generate: {per_frame * 512}x{per_frame * 512} px x 1 frame is "
                                          r"262,144 DiT tokens; the limit is 65,536 \(the default"):
        pipe.generate("x", per_frame * 512, per_frame * 512, 1, **FAST)
    monkeypatch.setattr(pipe, "budget", Budget(max_memory=1 << 16))
    monkeypatch.setattr(cond, "encode_frames", lambda *a: pytest.fail("encoded the clip"))
    with pytest.raises(BudgetError, match=r"^extend: 32x32 px x 9 frames needs about .* VAE encode .* the limit is "
                                          r"64.0 KiB \(as asked"):
        pipe.extend(clip(9), "x", new_frames=4, context_frames=4, **FAST)


def test_a_released_size_is_within_the_default_token_limit_at_its_native_size():
    from sora_core.budget import Budget, BudgetError, check
    from sora_core.wan.dit import WanConfig
    from sora_core.wan.vae import WAN21_VAE

    config = WanConfig(WanDiTConfig.released("wan-t2v-14B"), WAN21_VAE, "wan-t2v-14B")  # 75,600 tokens at 1280x720x81
    roomy = Budget(max_memory=1 << 50)
    assert check(config, what="generate", width=1280, height=720, frames=81, budget=roomy).tokens == 75_600
    with pytest.raises(BudgetError, match=r"1280x720 px x 85 frames is 79,200 DiT tokens; the limit is 75,600 "
                                          r"\(the default"):
        check(config, what="generate", width=1280, height=720, frames=85, budget=roomy)


def test_the_cli_names_gguf_and_unknown_files_in_one_line_before_loading_anything(tmp_path, capsys, monkeypatch):
    from sora_core.wan import files

    gguf = tmp_path / "wan2.1-t2v-1.3b-Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    unknown = write(tmp_path / "mystery.safetensors", {"foo.weight": torch.zeros(2, 2)})
    monkeypatch.setattr(files, "load_into", lambda *a, **k: pytest.fail("loaded weights"))
    out = str(tmp_path / "x.png")
    gguf_refused = r"is a GGUF file .*refused without being opened.*sora_core reads safetensors files"
    for args, what in ((["inspect", gguf], gguf_refused), (["generate", "x", "-o", out, "--model", gguf], gguf_refused),
                       (["generate", "x", "-o", out, "--model", unknown],
                        r"is a file of no known layout .*not a diffusion model\. sora_core reads Wan 2\.1 / 2\.2")):
        assert main([str(a) for a in args] + (["--no-provenance"] if args[0] == "generate" else [])) == 2
        err = capsys.readouterr().err
        assert re.fullmatch(rf"error: '{re.escape(str(args[-1]))}' {what}.*\n", err), err
    assert not (tmp_path / "x.png").exists()


# -- one conditioning mechanism ---------------------------------------------------------------

def spy(dit):
    """Record each model call's x and t."""
    calls = []
    forward = dit.forward

    def record(x, t, *args):
        calls.append((x.clone(), t.clone()))
        return forward(x, t, *args)

    dit.forward = record
    return calls


def test_per_frame_models_see_given_frames_at_t0_and_one_t_models_their_renoised_latent(pipe, wan):
    family, *_ = wan
    dit = load_wan_dit(wan[1])
    calls = spy(dit)
    window = cond.extend_forward(pipe.vae, clip(9), new_frames=8, context_frames=4)  # given: latent frames 0, 1
    text = pipe.encode_text("x")
    out = sample_window(dit, window.samples, window.strength, text, None, steps=3, cfg=1.0, seed=9)
    given = window.strength[0] == 0
    assert torch.equal(out[:, :, given], window.samples[:, :, given]) and len(calls) == 3
    g = torch.Generator().manual_seed(9)
    assert torch.equal(torch.randn(window.samples.shape, generator=g), seeded_noise(window.samples.shape, 9))
    renoise = torch.randn(window.samples.shape, generator=g)  # the window's second draw
    for x, t in calls:
        if family == "2.2":  # Wan 2.2 TI2V: a time per latent frame, given frames at 0 and exactly as given
            assert t.shape == (1, 4) and (t[:, given] == 0).all() and (t[:, ~given] > 0).all()
            assert torch.equal(x[:, :, given], window.samples[:, :, given])
        else:  # Wan 2.1: one t per sample; given frames re-noised to it with one fixed noise
            assert t.shape == (1,)
            sigma = float(t)
            want = (1 - sigma) * window.samples[:, :, given] + sigma * renoise[:, :, given]
            assert torch.allclose(x[:, :, given], want, atol=1e-6)
    assert len({float(t.max()) for _, t in calls}) == 3  # a schedule, not one time


def test_one_t_sdedit_frames_waiting_at_their_strength_are_carried_to_sigma():
    from sora_core.engine import one_time_per_sample

    seen = []
    model = one_time_per_sample(lambda x, t: seen.append((x, t)) or torch.zeros_like(x), torch.ones(1, 1, 3, 1, 1))
    x = torch.full((1, 1, 3, 1, 1), 0.5)
    model(x, torch.tensor([[0.8, 0.3, 0.0]]))
    got, t = seen[0]
    assert torch.equal(t, torch.tensor([0.8]))
    a = 0.2 / 0.7  # (1 - sigma) / (1 - s) for the frame waiting at s = 0.3
    b = math.sqrt(0.8**2 - (a * 0.3) ** 2)  # its noise grows from 0.3 to 0.8
    assert torch.allclose(got.flatten(), torch.tensor([0.5, a * 0.5 + b, 0.2 * 0.5 + 0.8]), atol=1e-6)


def test_sequential_cfg_equals_the_batched_halves(pipe):
    window = cond.extend_forward(pipe.vae, clip(9), new_frames=4, context_frames=4)
    text, neg = pipe.encode_texts("a cat", "blurry")
    outs = [sample_window(pipe.dit, window.samples, window.strength, text, neg, steps=2, cfg=4.0, sequential_cfg=s)
            for s in (False, True)]
    assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)  # batch size changes float rounding only
    assert not torch.equal(outs[0], sample_window(pipe.dit, window.samples, window.strength, text, neg, steps=2,
                                                  cfg=1.0))  # guidance does something


def test_offload_loads_each_part_for_its_use_and_gives_the_same_video(wan, pipe):
    _, dit, vae, te = wan
    lazy = Pipeline.load(dit, vae=vae, text_encoder=te, offload=True)
    assert callable(lazy._dit) and not isinstance(lazy._dit, torch.nn.Module)
    assert torch.equal(lazy.generate("a cat", 32, 32, 5, **FAST), pipe.generate("a cat", 32, 32, 5, **FAST))


# -- the causal VAE: context latents with the right history ---------------------------------------

def test_context_before_new_frames_has_the_latents_it_has_inside_the_window(pipe):
    vae, video = pipe.vae, clip(13)
    window = cond.extend_forward(vae, video, new_frames=4, context_frames=8)
    new = clip(4, seed=3)  # whatever the new frames turn out to be
    whole = vae.encode(cond.frames_to_video(torch.cat([video[-9:], new])))
    assert torch.equal(window.samples[:, :, :3], whole[:, :, :3])


def test_context_after_new_frames_is_reencoded_against_what_the_window_decodes_to(pipe, monkeypatch):
    vae, video = pipe.vae, clip(9)
    window = cond.extend_backward(vae, video, new_frames=4, context_frames=8, blend_frames=2)
    tail = window.samples[:, :, 2:]
    # before sampling: an estimate, since what precedes these frames is not known yet
    assert torch.equal(tail, vae.encode_chunks(cond.frames_to_video(video[:8])))
    latents = window.samples.clone()
    latents[:, :, :2] = torch.randn(1, latents.shape[1], 2, *latents.shape[3:], generator=torch.Generator().manual_seed(0))
    decoded = []
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda z, **kw: decoded.append(z) or decode(z, **kw))
    frames = cond.decode(vae, window, latents)
    head = decode(latents[:, :, :2])  # 5 frames: the generated ones
    exact = vae.encode(torch.cat([head, cond.frames_to_video(video[:8])], dim=2))[:, :, 2:]  # in-clip latents
    assert torch.equal(decoded[-1][:, :, :2], latents[:, :, :2]) and torch.allclose(decoded[-1][:, :, 2:], exact, atol=1e-6)
    assert not torch.allclose(exact, tail, atol=1e-3)  # the history matters
    assert frames.shape == (13, 32, 32, 3) and torch.equal(frames[6:], video[2:])  # outside the 2 blended frames
    # with no crossfade the decoded context is dropped by the splice, so it is not re-encoded
    decoded.clear()
    window.splice.blend = 0
    cond.decode(vae, window, latents)
    assert len(decoded) == 1 and torch.equal(decoded[0], latents)


# -- loaders: every stored variant, refusals ----------------------------------------------------

def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_vae_files_load_in_every_stored_dtype_and_prefix(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {}  # weights at 1 / sqrt(fan-in), so activations stay in fp16's range as in a trained VAE
    for k, shape in expected_shapes_vae(FAMILIES["2.2"][1]).items():
        t = torch.randn(shape, generator=g)
        state[k] = 1 + 0.1 * t if k.endswith("gamma") else t / math.prod(shape[1:]) ** 0.5 if len(shape) > 1 else 0.05 * t
    path = write(tmp_path / "vae.safetensors", state)
    ref = load_wan_vae(path)
    x = clip(5).permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        z = ref.encode(x)
        want = ref.decode(z)
        prefixed = load_wan_vae(write(tmp_path / "p.safetensors", {"first_stage_model." + k: v for k, v in state.items()}))
        assert torch.equal(prefixed.encode(x), z)
        for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
            half = load_wan_vae(write(tmp_path / "h.safetensors", {k: v.to(dtype) for k, v in state.items()}))
            assert half.dtype == dtype
            err_z, err_x = rel(half.encode(x), z), rel(half.decode(z), want)
            print(f"VAE {dtype}: encode {err_z:.1e}, decode {err_x:.1e}")
            assert err_z < tol and err_x < tol
    state["decoder.head.2.weight"] = state["decoder.head.2.weight"][:6]
    with pytest.raises(ValueError, match=r"bad\.safetensors.*decoder\.head\.2\.weight.*\(6, 12, 3, 3, 3\).*\(12, 12, 3, 3, 3\)"):
        load_wan_vae(write(tmp_path / "bad.safetensors", state))


def test_umt5_files_load_in_every_stored_dtype_prefix_and_scaled_fp8(tmp_path, tokenizer_bytes):
    state = umt5_state(tiny_umt5())
    spiece = {"spiece_model": torch.frombuffer(bytearray(tokenizer_bytes), dtype=torch.uint8)}
    ref = load_umt5(write(tmp_path / "ref.safetensors", state | spiece))
    want, mask = ref.encode(["a red ball moving left", "sky"])
    assert want.shape == (2, 512, TEXT_DIM) and mask.sum() > 2

    def encode(file_state, **kw):
        return load_umt5(write(tmp_path / "v.safetensors", file_state), **kw).encode(["a red ball moving left", "sky"])[0]

    # ComfyUI's prefix and the tied embedding kept under its other name, a full umt5 with a decoder
    assert torch.equal(encode({"text_encoders.umt5xxl.transformer." + k: v for k, v in (state | spiece).items()}), want)
    tied = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in state.items()}
    assert torch.equal(encode(tied | spiece | {"decoder.final_layer_norm.weight": torch.ones(TEXT_DIM)}), want)
    (tmp_path / "spiece.model").write_bytes(tokenizer_bytes)
    assert torch.equal(encode(state, tokenizer=str(tmp_path / "spiece.model")), want)  # a tokenizer file named
    for dtype, tol in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
        err = rel(encode({k: v.to(dtype) for k, v in state.items()} | spiece), want)
        print(f"umt5 {dtype}: {err:.1e}")
        assert err < tol
    fp8 = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)} | spiece
    for k, v in state.items():
        if v.ndim == 2 and k.startswith("encoder.block") and "relative_attention_bias" not in k:
            scale = v.abs().amax() / 448
            fp8 |= {k: (v / scale).to(torch.float8_e4m3fn), k[: -len("weight")] + "scale_weight": scale}
        else:
            fp8[k] = v
    err = rel(encode(fp8), want)
    print(f"umt5 scaled fp8: {err:.1e}")
    assert err < 0.1
    with pytest.raises(ValueError, match=r"holds no `spiece_model`.*--tokenizer"):
        load_umt5(write(tmp_path / "bare.safetensors", state))


def test_wrong_or_mismatched_files_are_refused_by_name_before_loading(wan, tmp_path, micro_checkpoint, monkeypatch,
                                                                    capsys):
    family, dit, vae, te = wan
    other = FAMILIES["2.2" if family == "2.1" else "2.1"]
    other_vae = write_random_file(tmp_path / "other_vae.safetensors", other[1])
    loads = []
    import sora_core.wan.dit as wan_dit

    monkeypatch.setattr(wan_dit, "load_wan_dit", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError, match=r"dit\.safetensors.*a wan diffusion model \(custom\); it also needs vae"):
        Pipeline.load(dit, text_encoder=te)
    with pytest.raises(ValueError, match=rf"other_vae\.safetensors.*{other[0]} latent channels.*works in "
                                         rf"{FAMILIES[family][0]}"):
        Pipeline.load(dit, vae=other_vae, text_encoder=te)
    with pytest.raises(ValueError, match=r"vae\.safetensors.*is a wan VAE .*not a text encoder"):
        Pipeline.load(dit, vae=vae, text_encoder=vae)
    with pytest.raises(ValueError, match=r"vae\.safetensors.*is a wan VAE .*not a diffusion model"):
        Pipeline.load(vae, vae=vae, text_encoder=te)
    with pytest.raises(ValueError, match=r"sora-nodes checkpoint.*vae are for Wan"):
        Pipeline.load(micro_checkpoint, vae=vae)
    wide = UMT5Config(vocab_size=64, dim=32, inner_dim=32, heads=4, ffn_dim=48, layers=1)
    narrow = write(tmp_path / "narrow_te.safetensors", umt5_state(wide))
    with pytest.raises(ValueError, match=r"narrow_te\.safetensors.*32-wide states.*reads 64-wide"):
        Pipeline.load(dit, vae=vae, text_encoder=narrow)
    bare = write(tmp_path / "bare_te.safetensors", umt5_state(tiny_umt5(layers=1)))
    with pytest.raises(ValueError, match=r"bare_te\.safetensors.*no `spiece_model`"):
        Pipeline.load(dit, vae=vae, text_encoder=bare)
    # the CLI says the same in one line
    assert main(["generate", "x", "-o", str(tmp_path / "x.png"), "--model", dit, "--vae", other_vae,
                 "--text-encoder", te, "--no-provenance"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: .*other_vae\.safetensors.*latent channels.*\n", err) and err.count("\n") == 1
    assert loads == [] and not (tmp_path / "x.png").exists()


def test_long_video_chains_windows_on_wan_and_keeps_the_start_clip(pipe):
    """sora_core.long on both Wan families (one t per sample: 2.1; per frame: 2.2): three windows after a
    start clip, the clip itself untouched up to the crossfade before the first join, every frame finite."""
    from sora_core.long import LongVideo

    start = clip(9, seed=3)
    job = LongVideo(pipe, "a ball rolling on", 9 + 3 * 4, start=start, new_frames=4, context_frames=4, blend_frames=2,
                    steps=1, cfg=1.0, seed=2)
    frames = torch.cat(list(job))
    assert frames.shape == (21, 32, 32, 3) and torch.isfinite(frames).all()
    assert torch.equal(frames[:7], start[:7])  # the last blend_frames of the clip crossfade into the stream
    assert job.joins == [8, 12, 16]
