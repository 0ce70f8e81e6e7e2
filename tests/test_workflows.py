"""Every shipped workflow, converted UI -> API as the frontend does and executed headless.

The model is the shipped default when it exists, else a random-weight micro checkpoint (set
through SORA_MODEL), so these check wiring, sizes and splicing rather than picture quality.
The save nodes are the pack's own: they write signed files into a temporary output folder.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, host
from sora_core.pipeline import DEFAULT_MODEL, default_model_path
from sora_core.provenance import ASSERTION, DIGITAL_SOURCE_TYPE, file_sha256, read_manifest

from .workflow_api import CORE_DOUBLES, Recorder, class_specs, execute, ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
CLASSES = {**NODE_CLASS_MAPPINGS, **CORE_DOUBLES}
SAVE_NODES = ("SoraSaveVideo", "SoraSaveImage")

# workflow -> {filename prefix: (frames, width, height)} of what it saves or previews
EXPECTED = {
    "text_to_video": {"sora/text_to_video": (17, 64, 64)},
    "text_to_image": {"sora/text_to_image": (1, 128, 128)},
    "aspect_ratios": {"sora/aspect_widescreen": (17, 88, 48), "sora/aspect_vertical": (17, 48, 88),
                      "sora/aspect_square": (17, 64, 64)},
    "prototype_then_full_res": {"preview": (17, 32, 32), "sora/prototype_full_res": (17, 64, 64)},
    "animate_image": {"preview": (1, 64, 64), "sora/animate_image": (17, 64, 64)},
    "extend_forward": {"sora/extend_source": (17, 64, 64), "sora/extend_forward": (33, 64, 64)},
    "extend_backward": {"sora/extend_backward_ending": (17, 64, 64), "sora/extend_backward_seed32": (33, 64, 64),
                        "sora/extend_backward_seed33": (33, 64, 64), "sora/extend_backward_seed34": (33, 64, 64)},
    "seamless_loop": {"sora/seamless_loop": (25, 64, 64)},
    "video_to_video_sdedit": {"sora/sdedit_source": (17, 64, 64), "sora/sdedit_edited": (17, 64, 64)},
    "connect_two_clips": {"sora/connect_two_clips": (50, 64, 64)},
    "recaption": {"sora/recaption": (17, 64, 64)},
}


@pytest.fixture(autouse=True)
def model_file(monkeypatch, micro_checkpoint):
    if not DEFAULT_MODEL.is_file():
        monkeypatch.setenv("SORA_MODEL", micro_checkpoint)


@pytest.fixture(scope="module", autouse=True)
def output_folder(tmp_path_factory):
    """The save nodes' output folder for this module (run() is cached, so its files stay put)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(host, "OUTPUT_DIR", tmp_path_factory.mktemp("output"))
        yield host.OUTPUT_DIR


@functools.cache
def run(name: str) -> tuple[dict, dict, dict, dict]:
    """(API prompt, saved or previewed frames by filename prefix, node outputs, node UI) of one workflow, run once."""
    prompt = ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), class_specs(CLASSES))
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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workflow_runs_and_saves_the_expected_videos(name):
    _, saved, _, _ = run(name)
    assert {k: (v.shape[0], v.shape[2], v.shape[1]) for k, v in saved.items()} == EXPECTED[name]
    for key, frames in saved.items():
        assert frames.shape[-1] == 3 and frames.dtype == torch.float32, key
        assert torch.isfinite(frames).all(), key
        assert frames.amax() > 0.05, f"{key} is black"


def test_extend_forward_output_starts_with_the_untouched_source():
    _, saved, _, _ = run("extend_forward")
    # untouched except the 4 frames that crossfade into the new ones at the join
    assert torch.equal(saved["sora/extend_forward"][:13], saved["sora/extend_source"][:13])


def test_extend_backward_gives_different_beginnings_to_the_same_ending():
    _, saved, _, _ = run("extend_backward")
    ending = saved["sora/extend_backward_ending"]
    videos = [saved[f"sora/extend_backward_seed{s}"] for s in (32, 33, 34)]
    for video in videos:
        assert torch.equal(video[20:], ending[4:])
    assert not torch.equal(videos[0][:16], videos[1][:16])
    assert not torch.equal(videos[1][:16], videos[2][:16])


def test_connect_output_is_first_transition_second():
    prompt, saved, outputs, _ = run("connect_two_clips")
    _, connect = node_of(prompt, "SoraConnect")
    first = outputs[connect["inputs"]["first"][0]][0]
    second = outputs[connect["inputs"]["second"][0]][0]
    joined = saved["sora/connect_two_clips"]
    assert torch.equal(joined[:13], first[:13]) and torch.equal(joined[-13:], second[4:])


def test_loop_output_starts_with_the_source_clip():
    prompt, saved, outputs, _ = run("seamless_loop")
    _, loop = node_of(prompt, "SoraLoop")
    source = outputs[loop["inputs"]["video"][0]][0]  # both of its ends crossfade, 4 frames each
    assert torch.equal(saved["sora/seamless_loop"][4:13], source[4:13])


def test_recaption_workflow_shows_and_encodes_the_caption():
    prompt, _, _, ui = run("recaption")
    node_id, recaption = node_of(prompt, "SoraRecaption")
    caption = ui[node_id]["text"][0]
    assert len(caption.split()) > len(recaption["inputs"]["prompt"].split())


def test_converter_sends_links_and_skips_seed_controls_and_notes():
    prompt = ui_to_api(json.loads((WORKFLOWS / "recaption.json").read_text()), class_specs(CLASSES))
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


@pytest.mark.parametrize("name", ["text_to_image", "extend_forward", "video_to_video_sdedit"])
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
