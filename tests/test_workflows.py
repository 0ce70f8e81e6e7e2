"""Every shipped workflow, converted UI -> API as the frontend does and executed headless.

The model is the shipped default when it exists, else a random-weight micro checkpoint (set
through SORA_MODEL), so these check wiring, sizes and splicing rather than picture quality.
The Wan workflows load tiny random Wan files written under the real file names into a temporary
ComfyUI-style models folder (SORA_COMFY_MODELS) and run at reduced sizes (workflow_api.reduced).
The one that mixes core's loaders, CLIPTextEncode and KSampler with our nodes has no headless
doubles for them (they would be fakes): it runs in tests/test_comfyui_server.py only.
The save nodes are the pack's own: they write signed files into a temporary output folder.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from sora_core.conditioning import TRANSITION_STRENGTH
from sora_core.pipeline import DEFAULT_MODEL, default_model_path
from sora_core.provenance import ASSERTION, DIGITAL_SOURCE_TYPE, file_sha256, read_manifest

from .wan_files import FAMILIES, TEXT_ENCODER, write_wan_models
from .workflow_api import (CORE_DISPLAY_NAMES, CORE_DOUBLES, CORE_ONLY, TEXT_DISPLAY, TITLE_H, Recorder, class_specs,
                           execute, min_node_size, reduced, ui_to_api)

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
CLASSES = {**NODE_CLASS_MAPPINGS, **CORE_DOUBLES, **CORE_ONLY}
SAVE_NODES = ("SoraSaveVideo", "SoraSaveImage")

# workflow -> {filename prefix: (frames, width, height)} of what it saves or previews
EXPECTED = {
    "01. Text to video": {"sora/text_to_video": (17, 64, 64)},
    "02. Text to image": {"sora/text_to_image": (1, 128, 128)},
    "03. Aspect ratios": {"sora/aspect_widescreen": (17, 88, 48), "sora/aspect_vertical": (17, 48, 88),
                         "sora/aspect_square": (17, 64, 64)},
    "04. Prototype small, then full resolution": {"sora/prototype": (17, 32, 32),
                                                 "sora/prototype_full_res": (17, 64, 64)},
    "05. Animate an image": {"preview": (1, 64, 64), "sora/animate_image": (17, 64, 64)},
    "06. Extend a video forward": {"sora/extend_source": (17, 64, 64), "sora/extend_forward": (33, 64, 64)},
    "07. Extend backward (three beginnings)": {
        "sora/extend_backward_ending": (17, 64, 64), "sora/extend_backward_seed32": (33, 64, 64),
        "sora/extend_backward_seed33": (33, 64, 64), "sora/extend_backward_seed34": (33, 64, 64)},
    "08. Seamless loop": {"sora/seamless_loop": (25, 64, 64)},
    "09. Video to video (SDEdit)": {"sora/sdedit_source": (17, 64, 64), "sora/sdedit_edited": (17, 64, 64)},
    "10. Connect two clips": {"sora/connect_two_clips": (50, 64, 64)},
    "11. Recaption a short prompt": {"sora/recaption": (17, 64, 64)},
    "12. A minute of video": {"sora/long_video": (32, 64, 64)},  # run at 4 s (workflow_api.REDUCED)
}
# The Wan workflows at their reduced sizes: 832x480 -> 64x32, 1280x704 -> 64x32, 81 / 121 frames -> 9, extensions
# and transitions 4 frames (workflow_api.WAN_REDUCED).
WAN_EXPECTED = {
    "13. Wan 2.1 text to video": {"sora/wan_text_to_video": (9, 64, 32)},
    "14. Wan 2.2 animate an image": {"preview": (1, 64, 32), "sora/wan_animate_image": (9, 64, 32)},
    "15. Wan 2.1 extend a video forward": {"sora/wan_extend_source": (9, 64, 32), "sora/wan_extend_forward": (13, 64, 32)},
    "16. Wan 2.1 extend backward (three beginnings)": {
        "sora/wan_extend_backward_ending": (9, 64, 32), "sora/wan_extend_backward_seed32": (13, 64, 32),
        "sora/wan_extend_backward_seed33": (13, 64, 32), "sora/wan_extend_backward_seed34": (13, 64, 32)},
    "17. Wan 2.1 seamless loop": {"sora/wan_seamless_loop": (13, 64, 32)},
    "18. Wan 2.1 connect two clips": {"sora/wan_connect_two_clips": (22, 64, 32)},
    "19. Wan 2.1 video to video (SDEdit)": {"sora/wan_sdedit_source": (9, 64, 32), "sora/wan_sdedit_edited": (9, 64, 32)},
    "20. Wan 2.1 widescreen and vertical": {"sora/wan_aspect_widescreen": (9, 64, 32),
                                            "sora/wan_aspect_vertical": (9, 32, 64)},
    "21. Wan 2.1 prototype small, then full resolution": {"sora/wan_prototype": (9, 32, 32),
                                                          "sora/wan_prototype_full_res": (9, 64, 32)},
    "22. Wan 2.1 with core nodes (KSampler extends a clip)": {"sora/wan_core_source": (9, 64, 32),
                                                              "sora/wan_core_extended": (13, 64, 32)},
}
SERVER_ONLY = {"22. Wan 2.1 with core nodes (KSampler extends a clip)"}  # core's KSampler, umt5: no doubles
EXPECTED |= WAN_EXPECTED
HEADLESS = sorted(set(EXPECTED) - SERVER_ONLY)


@pytest.fixture(autouse=True)
def model_file(monkeypatch, micro_checkpoint):
    if not DEFAULT_MODEL.is_file():
        monkeypatch.setenv("SORA_MODEL", micro_checkpoint)


@pytest.fixture(scope="module")
def wan_models(tmp_path_factory):
    """A ComfyUI models folder with tiny Wan 2.1 and 2.2 files under the names the Wan workflows load."""
    root = tmp_path_factory.mktemp("models")
    write_wan_models(root, text_dim=4096)  # umt5-xxl's width, as the real files have it
    return root


@pytest.fixture(autouse=True)
def wan_folders(monkeypatch, wan_models):
    monkeypatch.setenv(host.MODELS_ENV, str(wan_models))


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest


@pytest.fixture(scope="module", autouse=True)
def output_folder(tmp_path_factory):
    """The save nodes' output folder for this module (run() is cached, so its files stay put)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host, "OUTPUT_DIR", tmp_path_factory.mktemp("output"))
        yield host.OUTPUT_DIR


@functools.cache
def run(name: str) -> tuple[dict, dict, dict, dict]:
    """(API prompt, saved or previewed frames by filename prefix, node outputs, node UI) of one workflow, run once."""
    prompt = reduced(ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), class_specs(CLASSES)))
    Recorder.saved = {}
    outputs, ui = execute(prompt, CLASSES)
    saved = dict(Recorder.saved)
    for nid, node in prompt.items():
        if node["class_type"] in SAVE_NODES:
            saved[node["inputs"]["filename_prefix"]] = outputs[nid][0]
    return prompt, saved, outputs, ui


def saved_files(name: str) -> dict[str, list]:
    """The files each save node of a workflow wrote, by filename prefix."""
    prompt, _, _, ui = run(name)
    return {node["inputs"]["filename_prefix"]: [host.OUTPUT_DIR / e["subfolder"] / e["filename"] for e in ui[nid]["images"]]
            for nid, node in prompt.items() if node["class_type"] in SAVE_NODES}


def node_of(prompt: dict, class_type: str) -> tuple[str, dict]:
    return next((k, n) for k, n in prompt.items() if n["class_type"] == class_type)


def test_every_shipped_workflow_is_covered():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(EXPECTED)


def test_every_workflow_saves_through_the_signing_save_nodes():
    for path in WORKFLOWS.glob("*.json"):
        types = {n["type"] for n in json.loads(path.read_text())["nodes"]}
        assert types & set(SAVE_NODES) and not types & {"SaveAnimatedWEBP", "SaveImage", "SaveVideo"}, path.stem


@pytest.mark.parametrize("name", HEADLESS)
def test_workflow_runs_and_saves_the_expected_videos(name):
    _, saved, _, _ = run(name)
    assert {k: (v.shape[0], v.shape[2], v.shape[1]) for k, v in saved.items()} == EXPECTED[name]
    for key, frames in saved.items():
        assert frames.shape[-1] == 3 and frames.dtype == torch.float32, key
        assert torch.isfinite(frames).all(), key
        assert frames.amax() > 0.05, f"{key} is black"


def test_extend_forward_output_starts_with_the_untouched_source():
    _, saved, _, _ = run("06. Extend a video forward")
    # untouched except the 4 frames that crossfade into the new ones at the join
    assert torch.equal(saved["sora/extend_forward"][:13], saved["sora/extend_source"][:13])


def test_animate_output_starts_with_the_still_exactly():
    _, saved, _, _ = run("05. Animate an image")
    assert torch.equal(saved["sora/animate_image"][0], saved["preview"][0])


def test_extend_backward_gives_different_beginnings_to_the_same_ending():
    _, saved, _, _ = run("07. Extend backward (three beginnings)")
    ending = saved["sora/extend_backward_ending"]
    videos = [saved[f"sora/extend_backward_seed{s}"] for s in (32, 33, 34)]
    for video in videos:
        assert torch.equal(video[20:], ending[4:])
    assert not torch.equal(videos[0][:16], videos[1][:16])
    assert not torch.equal(videos[1][:16], videos[2][:16])


def test_connect_output_is_first_transition_second():
    prompt, saved, outputs, _ = run("10. Connect two clips")
    _, connect = node_of(prompt, "SoraConnect")
    first = outputs[connect["inputs"]["first"][0]][0]
    second = outputs[connect["inputs"]["second"][0]][0]
    joined = saved["sora/connect_two_clips"]
    # the first clip's last 4 frames crossfade into the transition; the second clip comes back whole
    # (the transition eases into its first frame instead)
    assert torch.equal(joined[:13], first[:13]) and torch.equal(joined[-second.shape[0]:], second)


def test_loop_output_starts_with_the_source_clip():
    prompt, saved, outputs, _ = run("08. Seamless loop")
    _, loop = node_of(prompt, "SoraLoop")
    source = outputs[loop["inputs"]["video"][0]][0]  # its end crossfades into the transition, 4 frames
    assert torch.equal(saved["sora/seamless_loop"][:13], source[:13])


# -- the Wan workflows: each capability's defining property, on tiny random files -------------------------

def test_the_wan_workflows_load_the_real_file_names_and_say_where_they_go():
    folder = {TEXT_ENCODER: "text_encoders"} | {dit: "diffusion_models" for dit, _, _, _ in FAMILIES.values()} | {
        vae: "vae" for _, vae, _, _ in FAMILIES.values()}
    inputs = {"SoraDiffusionModelLoader": "model_name", "SoraVAELoader": "vae_name",
              "SoraTextEncoderLoader": "text_encoder_name", "UNETLoader": "unet_name", "CLIPLoader": "clip_name",
              "VAELoader": "vae_name"}
    for name in WAN_EXPECTED:
        prompt = ui_to_api(load(name), class_specs(CLASSES))
        loaded = {n["inputs"][inputs[n["class_type"]]] for n in prompt.values() if n["class_type"] in inputs}
        assert len(loaded) == 3 and loaded <= set(folder), (name, loaded)
        assert ("wan2.2_ti2v_5B_fp16.safetensors" in loaded) == ("animate" in name), name  # the model made for it
        note = next(n for n in load(name)["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
        assert "in `ComfyUI/models/`" in note and "**VRAM**" in note and " GB " in note, name
        for file in loaded:
            assert f"`{folder[file]}/{file}`" in note, (name, file)


def test_the_wan_workflows_sample_with_each_models_recipe():
    from sora_core.wan.dit import RECIPES

    recipes = {"wan2.1_t2v_1.3B_fp16.safetensors": RECIPES["wan2.1-t2v-1.3B"],
               "wan2.2_ti2v_5B_fp16.safetensors": RECIPES["wan2.2-ti2v-5B"]}
    for name in WAN_EXPECTED:
        prompt = ui_to_api(load(name), class_specs(CLASSES))
        model = next(n["inputs"].get("model_name") or n["inputs"]["unet_name"] for n in prompt.values()
                     if n["class_type"] in ("SoraDiffusionModelLoader", "UNETLoader"))
        r = recipes[model]
        for node in prompt.values():
            i = node["inputs"]
            if node["class_type"] == "SoraDiTSampler":
                assert (i["steps"], i["cfg"], i["shift"]) == (r.steps, r.cfg, r.shift), name
            if node["class_type"] == "KSampler":  # core's Wan 2.1 sampling shift is 8 already, as the recipe's
                assert (i["steps"], i["cfg"]) == (r.steps, r.cfg) and r.shift == 8, name
            if node["class_type"] in ("SoraPatchifyGrid", "EmptyHunyuanLatentVideo"):
                size = (i["width"], i["height"])
                assert size in ((r.width, r.height), (r.height, r.width), (r.width // 2, r.height // 2)), name
        negatives = [n for n in load(name)["nodes"] if (n.get("title") or "").startswith("Negative")]
        assert [n["widgets_values"][0] for n in negatives] == [r.negative_prompt], name
        saves = [n["inputs"]["fps"] for n in prompt.values() if n["class_type"] == "SoraSaveVideo"]
        assert saves and set(saves) == {float(r.fps)}, name


def test_wan_text_to_video_decodes_a_clip_of_the_grids_size():
    _, saved, _, _ = run("13. Wan 2.1 text to video")
    frames = saved["sora/wan_text_to_video"]
    assert frames.shape == (9, 32, 64, 3) and frames.std() > 0.01


def test_wan_animate_starts_with_the_still_exactly():
    _, saved, _, _ = run("14. Wan 2.2 animate an image")
    video = saved["sora/wan_animate_image"]
    assert torch.equal(video[0], saved["preview"][0]) and not torch.equal(video[-1], video[0])


def test_wan_extend_forward_keeps_the_source_frames():
    _, saved, _, _ = run("15. Wan 2.1 extend a video forward")
    source, longer = saved["sora/wan_extend_source"], saved["sora/wan_extend_forward"]
    assert torch.equal(longer[:5], source[:5])  # all but the 4 that crossfade at the join
    assert not torch.equal(longer[5:9], source[5:9]) and longer.shape[0] == source.shape[0] + 4


def test_wan_extend_backward_gives_different_beginnings_to_one_ending():
    _, saved, _, _ = run("16. Wan 2.1 extend backward (three beginnings)")
    ending = saved["sora/wan_extend_backward_ending"]
    videos = [saved[f"sora/wan_extend_backward_seed{s}"] for s in (32, 33, 34)]
    for video in videos:
        assert torch.equal(video[8:], ending[4:])  # 4 new frames, then the ending (its first 4 crossfade)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert (videos[a][:4] - videos[b][:4]).abs().mean() > 1e-3


def test_wan_loop_ends_on_a_transition_into_its_own_start():
    prompt, saved, outputs, _ = run("17. Wan 2.1 seamless loop")
    loop_id, loop = node_of(prompt, "SoraLoop")
    source = outputs[loop["inputs"]["video"][0]][0]
    window = outputs[loop_id][0]
    # the window: the clip's end (given), the transition (from a dissolve, noised to the default strength),
    # the clip's start (given)
    assert window["noise_mask"][0, 0, :, 0, 0].tolist() == pytest.approx([0, 0, TRANSITION_STRENGTH, 0])
    assert torch.equal(window["sora_tail"].frames, source[:4])
    looped = saved["sora/wan_seamless_loop"]
    assert looped.shape[0] == source.shape[0] + 4 and torch.equal(looped[:5], source[:5])
    # played on repeat, the transition's second half eases into the clip's start (weights 1/3, 2/3)
    gap = [float((looped[i] - source[0]).abs().mean()) for i in (-3, -1)]
    assert gap[1] < gap[0]


def test_wan_connect_is_first_transition_second():
    prompt, saved, outputs, _ = run("18. Wan 2.1 connect two clips")
    _, connect = node_of(prompt, "SoraConnect")
    first = outputs[connect["inputs"]["first"][0]][0]
    second = outputs[connect["inputs"]["second"][0]][0]
    joined = saved["sora/wan_connect_two_clips"]
    assert joined.shape[0] == 9 + 4 + 9 and torch.equal(joined[:5], first[:5]) and torch.equal(joined[-9:], second)


def test_wan_sdedit_redraws_the_encoded_source_at_its_strength():
    prompt, saved, outputs, _ = run("19. Wan 2.1 video to video (SDEdit)")
    noise_id, _ = node_of(prompt, "SoraSDEditNoise")
    mask = outputs[noise_id][0]["noise_mask"]
    assert torch.allclose(mask, torch.full_like(mask, 0.6))
    source, edited = saved["sora/wan_sdedit_source"], saved["sora/wan_sdedit_edited"]
    assert edited.shape == source.shape and (edited - source).abs().mean() > 1e-3


def test_wan_widescreen_and_vertical_come_from_one_seed_and_model():
    prompt, saved, _, _ = run("20. Wan 2.1 widescreen and vertical")
    samplers = [n["inputs"] for n in prompt.values() if n["class_type"] == "SoraDiTSampler"]
    assert len(samplers) == 2 and samplers[0]["seed"] == samplers[1]["seed"]
    assert samplers[0]["model"] == samplers[1]["model"] and samplers[0]["positive"] == samplers[1]["positive"]
    assert saved["sora/wan_aspect_widescreen"].shape[1:3] == saved["sora/wan_aspect_vertical"].shape[2:0:-1]


def test_wan_full_resolution_pass_refines_the_prototype_with_its_seed():
    prompt, saved, _, _ = run("21. Wan 2.1 prototype small, then full resolution")
    seeds = {n["inputs"]["seed"] for n in prompt.values() if n["class_type"] == "SoraDiTSampler"}
    assert len(seeds) == 1
    prototype, full = saved["sora/wan_prototype"], saved["sora/wan_prototype_full_res"]
    assert prototype.shape[1] * prototype.shape[2] < full.shape[1] * full.shape[2]


def test_the_wan_core_graph_mixes_core_nodes_with_ours():
    prompt = ui_to_api(load("22. Wan 2.1 with core nodes (KSampler extends a clip)"), class_specs(CLASSES))
    types = {n["class_type"] for n in prompt.values()}
    assert {"UNETLoader", "CLIPLoader", "CLIPTextEncode", "KSampler", "SoraExtend", "SoraVAEDecode"} <= types
    _, extend = node_of(prompt, "SoraExtend")
    sampler = next(n for n in prompt.values() if n["class_type"] == "KSampler" and
                   prompt[n["inputs"]["latent_image"][0]]["class_type"] == "SoraExtend")
    assert prompt[extend["inputs"]["video"][0]]["class_type"] == "VAEDecode"
    assert next(n for n in prompt.values() if n["class_type"] == "CLIPLoader")["inputs"]["type"] == "wan"
    with pytest.raises(NotImplementedError, match="KSampler has no headless double"):
        CLASSES["KSampler"]().run(**sampler["inputs"])


def test_the_long_video_workflow_ships_a_minute_at_the_default_size():
    prompt = ui_to_api(load("12. A minute of video"), class_specs(CLASSES))
    _, node = node_of(prompt, "SoraLongVideo")
    assert node["inputs"]["seconds"] * node["inputs"]["fps"] == 480
    assert (node["inputs"]["width"], node["inputs"]["height"]) == (64, 64)


def test_recaption_workflow_shows_and_encodes_the_caption():
    prompt, _, _, ui = run("11. Recaption a short prompt")
    node_id, recaption = node_of(prompt, "SoraRecaption")
    caption = ui[node_id]["text"][0]
    assert len(caption.split()) > len(recaption["inputs"]["prompt"].split())


def test_converter_sends_links_and_skips_seed_controls_and_notes():
    prompt = ui_to_api(json.loads((WORKFLOWS / "11. Recaption a short prompt.json").read_text()), class_specs(CLASSES))
    assert "MarkdownNote" not in {n["class_type"] for n in prompt.values()}
    _, sampler = node_of(prompt, "SoraDiTSampler")
    assert sampler["inputs"]["seed"] == 71 and sampler["inputs"]["steps"] == 20
    encode = next(n for n in prompt.values() if n["class_type"] == "SoraTextEncode" and isinstance(n["inputs"]["text"], list))
    assert prompt[encode["inputs"]["text"][0]]["class_type"] == "SoraRecaption"


# -- what the saved files say about themselves (C2PA) --------------------------------------------

def manifest_chain(path) -> list[dict]:
    """The active manifest of a file, then the manifests of its ingredients, depth first."""
    store = read_manifest(path)
    assert store is not None and store["validation_state"] == "Valid", path
    chain, labels = [], [store["active_manifest"]]
    while labels:
        m = store["manifests"][labels.pop(0)]
        chain.append(m)
        labels += [i["active_manifest"] for i in m.get("ingredients", []) if "active_manifest" in i]
    return chain


def generation(manifest: dict) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == ASSERTION)


# saved file -> (operation, the saved file linked into its sources)
MADE_FROM = {"sora/extend_forward": ("extend", "sora/extend_source"),
             "sora/sdedit_edited": ("edit", "sora/sdedit_source")}


@pytest.mark.parametrize("name", ["02. Text to image", "06. Extend a video forward", "09. Video to video (SDEdit)"])
def test_saved_files_carry_a_signed_manifest_with_the_model_and_the_source_chain(name):
    files = saved_files(name)
    sha = file_sha256(default_model_path())
    for prefix, paths in files.items():
        assert len(paths) == 1 and paths[0].is_file(), prefix
        top, *sources = manifest_chain(paths[0])
        actions = next(a["data"]["actions"] for a in top["assertions"] if a["label"] == "c2pa.actions.v2")
        assert actions[0]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
        assert generation(top)["model"]["sha256"] == sha and "prompt" not in generation(top)
        operation, source = MADE_FROM.get(prefix, ("generate", None))
        assert generation(top)["operation"] == operation
        assert [m["title"] for m in sources] == ([files[source][0].name] if source else [])


# -- what the artist sees first: layout, saved view, template-browser metadata -----------------------------

def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def boxes(workflow: dict) -> list[tuple[str, list[float]]]:
    """(label, [x, y, w, h]) of every node, title bar included (it is drawn above pos)."""
    return [(f"{n['id']} {n.get('title') or n['type']}", [n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0],
                                                         n["size"][1] + TITLE_H]) for n in workflow["nodes"]]


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def inside(a: list[float], b: list[float]) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[0] + a[2] <= b[0] + b[2] and a[1] + a[3] <= b[1] + b[3]


def fit_zoom(workflow: dict, width: int, height: int) -> float:
    """The zoom of the frontend's "fit view" (DragAndScale.fitToBounds: 0.75 of the canvas, at least
    300 px of graph) on the bounds of every node and group; the template browser opens graphs with it."""
    rects = [b for _, b in boxes(workflow)] + [g["bounding"] for g in workflow["groups"]]
    w = max(r[0] + r[2] for r in rects) - min(r[0] for r in rects)
    h = max(r[1] + r[3] for r in rects) - min(r[1] for r in rects)
    return min(0.75 * width / max(w, 300), 0.75 * height / max(h, 300))


# Below this zoom the frontend draws nodes without text (LiteGraph.Canvas.MinFontSizeForLOD 8 px over
# its 14 px node font, ComfyUI frontend 1.49), so a graph must open above it.
LOW_QUALITY_ZOOM = 8 / 14


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_node_covers_another(name):
    nodes = boxes(load(name))
    for i, (a, box_a) in enumerate(nodes):
        for b, box_b in nodes[i + 1:]:
            assert not overlap(box_a, box_b), f"{name}: {a} overlaps {b}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_node_sits_in_one_group_and_groups_do_not_overlap(name):
    workflow = load(name)
    groups = [(g["title"], g["bounding"]) for g in workflow["groups"]]
    assert len(groups) >= 2
    for i, (a, box_a) in enumerate(groups):
        for b, box_b in groups[i + 1:]:
            assert not overlap(box_a, box_b), f"{name}: groups {a!r} and {b!r} overlap"
    notes = {str(n["id"]) for n in workflow["nodes"] if n["type"] == "MarkdownNote"}
    for label, box in boxes(workflow):
        homes = [title for title, g in groups if inside(box, g)]
        assert len(homes) == (0 if label.split(" ")[0] in notes else 1), f"{name}: {label} is in groups {homes}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_saved_sizes_are_at_least_what_the_frontend_computes(name):
    """The frontend grows a smaller node on load (covering the node below it and marking the tab modified)."""
    specs = class_specs(CLASSES)
    for node in load(name)["nodes"]:
        display = NODE_DISPLAY_NAME_MAPPINGS.get(node["type"]) or CORE_DISPLAY_NAMES[node["type"]]
        need = min_node_size(node, specs, display)
        assert node["size"][0] >= need[0] and node["size"][1] >= need[1], (
            f"{name}: node {node['id']} ({node['type']}) is {node['size']}, the frontend makes it at least {need}")


def test_text_display_nodes_are_the_ones_the_web_extension_extends():
    script = (WORKFLOWS.parent / "web" / "sora_text.js").read_text()
    listed = script.split("NODES_WITH_TEXT = new Set([", 1)[1].split("]", 1)[0]
    assert {s.strip().strip('"') for s in listed.split(",")} == TEXT_DISPLAY


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workflow_opens_readable(name):
    workflow = load(name)
    # from the template browser: fit view, on a 1600x1000 and a 1920x1080 canvas
    assert fit_zoom(workflow, 1600, 1000) >= 0.6 and fit_zoom(workflow, 1920, 1080) >= 0.65
    # from Workflow > Open: the saved view, which must show every node above the zoom where text disappears,
    # on the canvas of a 1600x900 window (1540x860 beside the side bar, below the tab bar), clear of the
    # floating toolbars along its top 60 px
    ds = workflow["extra"]["ds"]
    assert LOW_QUALITY_ZOOM < ds["scale"] <= 1
    for label, (x, y, w, h) in boxes(workflow):
        left, top = (x + ds["offset"][0]) * ds["scale"], (y + ds["offset"][1]) * ds["scale"]
        right, bottom = left + w * ds["scale"], top + h * ds["scale"]
        assert 0 <= left and right <= 1540 and 60 <= top and bottom <= 860, f"{name}: {label} is off screen"


def test_template_browser_titles_are_numbered_in_order():
    """The browser shows a custom pack's workflows by file name (title and description) in directory
    order, or sorted by name with numbers compared as numbers."""
    names = sorted((p.stem for p in WORKFLOWS.glob("*.json")), key=lambda n: int(n.split(".", 1)[0]))
    assert [int(n.split(".", 1)[0]) for n in names] == list(range(1, len(names) + 1))
    for name in names:
        title = name.split(". ", 1)[1]
        assert title[0].isupper() and "_" not in title and "-" not in title, name  # the browser shows _ and - as spaces


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workflow_has_a_note_with_its_title_and_description(name):
    notes = [n for n in load(name)["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    heading, _, description = notes[0]["widgets_values"][0].partition("\n\n")
    assert heading.startswith("# ") and len(description.split()) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_workflow_has_a_small_thumbnail_from_its_output(name):
    path = WORKFLOWS / f"{name}.jpg"  # what the frontend requests: /api/workflow_templates/<pack>/<name>.jpg
    assert path.is_file(), f"{path.name} is missing: run tools/build_workflows.py --thumbnails"
    assert path.stat().st_size < 60_000
    image = Image.open(path)
    assert image.format == "JPEG" and image.width == image.height >= 200
    pixels = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32))
    assert pixels.std() > 3, f"{path.name} is one flat colour"


def test_wan_thumbnails_are_the_builders_title_cards():
    """No output can be made without the real weights: the card names the capability, the model and its files,
    and the shipped one is what the builder draws for the workflow as it is now (its text is in the JPEG's
    comment, so a stale card is told apart whatever fonts draw it)."""
    from tools import build_workflows
    from tools.thumbnails import card_comment, title_card

    builds = zip(build_workflows.workflow_names(), build_workflows.WORKFLOWS)
    cards = {name: build_workflows.card_text(graph) for name, (_, build) in builds if (graph := build()).card}
    assert sorted(cards) == sorted(WAN_EXPECTED)
    capability, model, files = cards["16. Wan 2.1 extend backward (three beginnings)"]
    assert (capability, model) == ("Extend backward (three beginnings)", "Wan 2.1 1.3B")
    assert files == ["diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors", f"text_encoders/{TEXT_ENCODER}",
                     "vae/wan_2.1_vae.safetensors"]
    for name, card in cards.items():
        image = Image.open(WORKFLOWS / f"{name}.jpg")
        assert image.info.get("comment", b"").decode() == card_comment(*card), f"{name}: rebuild its card"
    drawn = [np.asarray(title_card(*card).convert("L"), dtype=np.float32) for card in
             ((capability, model, files), (capability, model, files[:2] + ["vae/wan2.2_vae.safetensors"]))]
    assert np.abs(drawn[0] - drawn[1]).max() > 100  # the files are written on it


def test_contact_sheet_spreads_each_video_over_its_length():
    from tools.thumbnails import contact_sheet

    ramp = torch.linspace(0, 1, 17)[:, None, None, None].expand(17, 8, 8, 3)  # frame t is grey level t/16
    sheet = contact_sheet([ramp]).convert("L")
    w, h = sheet.size
    corners = [sheet.getpixel((w // 4, h // 4)), sheet.getpixel((3 * w // 4, h // 4)),
               sheet.getpixel((w // 4, 3 * h // 4)), sheet.getpixel((3 * w // 4, 3 * h // 4))]
    assert corners[0] < 3 and corners[-1] > 252 and corners == sorted(corners)  # first .. last frame
    two = contact_sheet([ramp, ramp.flip(0)]).convert("L")
    assert two.getpixel((w // 4, h // 4)) < 3 and two.getpixel((w // 4, 3 * h // 4)) > 252


@pytest.mark.parametrize("name", sorted(WAN_EXPECTED))
def test_wan_loaders_say_where_each_missing_file_goes(name):
    """Like ComfyUI's own Wan templates: every loader names its file's folder and source, so the frontend's
    missing-models dialog says where to put it (the graph's note gives the same folders)."""
    workflow = load(name)
    note = next(n for n in workflow["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    folders = {"SoraDiffusionModelLoader": "diffusion_models", "UNETLoader": "diffusion_models",
               "SoraVAELoader": "vae", "VAELoader": "vae", "SoraTextEncoderLoader": "text_encoders",
               "CLIPLoader": "text_encoders"}
    loaders = [n for n in workflow["nodes"] if n["type"] in folders]
    assert loaders
    for node in loaders:
        (model,) = node["properties"]["models"]
        assert model["name"] in node["widgets_values"] and model["directory"] == folders[node["type"]]
        assert model["url"].startswith("https://huggingface.co/Comfy-Org/") and model["url"].endswith("/" + model["name"])
        assert f"{model['directory']}/{model['name']}" in note or f"`{model['directory']}/`" in note, model
