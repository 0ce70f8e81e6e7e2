"""Every shipped workflow, converted UI -> API as the frontend does and executed headless.

The model is the shipped default when it exists, else a random-weight micro checkpoint (set
through SORA_MODEL), so these check wiring, sizes and splicing rather than picture quality.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS
from sora_core.pipeline import DEFAULT_MODEL

from .workflow_api import CORE_DOUBLES, Recorder, class_specs, execute, reduced, ui_to_api

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
CLASSES = {**NODE_CLASS_MAPPINGS, **CORE_DOUBLES}

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
    "long_video": {"sora/long_video": (32, 64, 64)},  # reduced from a minute (see REDUCED)
    "recaption": {"sora/recaption": (17, 64, 64)},
}


@pytest.fixture(autouse=True)
def model_file(monkeypatch, micro_checkpoint):
    if not DEFAULT_MODEL.is_file():
        monkeypatch.setenv("SORA_MODEL", micro_checkpoint)


@functools.cache
def run(name: str) -> tuple[dict, dict, dict, dict]:
    """(API prompt, saved frames by filename prefix, node outputs, node UI) of one workflow, run once."""
    prompt = reduced(ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), class_specs(CLASSES)))
    Recorder.saved = {}
    outputs, ui = execute(prompt, CLASSES)
    return prompt, Recorder.saved, outputs, ui


def node_of(prompt: dict, class_type: str) -> tuple[str, dict]:
    return next((k, n) for k, n in prompt.items() if n["class_type"] == class_type)


def test_every_shipped_workflow_is_covered():
    assert sorted(p.stem for p in WORKFLOWS.glob("*.json")) == sorted(EXPECTED)


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


def test_the_long_video_workflow_ships_a_minute_at_the_default_size():
    prompt = ui_to_api(json.loads((WORKFLOWS / "long_video.json").read_text()), class_specs(CLASSES))
    _, node = node_of(prompt, "SoraLongVideo")
    assert node["inputs"]["seconds"] * node["inputs"]["fps"] == 480
    assert (node["inputs"]["width"], node["inputs"]["height"]) == (64, 64)


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
