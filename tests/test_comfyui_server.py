"""A real ComfyUI server with this pack in custom_nodes runs every shipped workflow.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout whose requirements are installed in
this Python. The server listens on 127.0.0.1 only, runs on the CPU with its base directory
and database in a temporary folder. Environment it passes on: PYTHONPATH (e.g. a torchvision
shim), SORA_MODEL (set to a micro checkpoint when the shipped model does not exist yet).
The Wan workflows find tiny random Wan files under the real names in the server's own
models/diffusion_models, vae and text_encoders (tests/wan_files.py); so that core's CLIPLoader
can read the tiny umt5 too, tests/comfyui_tiny_umt5.py goes in custom_nodes beside the pack.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from sora_core.pipeline import DEFAULT_MODEL

from .test_workflows import WAN_EXPECTED
from .wan_files import write_wan_models
from .workflow_api import VIRTUAL_NODES, object_info_specs, reduced, ui_to_api

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
COMFYUI = os.environ.get("COMFYUI_PATH")
PACK_NAME = "sora-nodes"
BOOT_TIMEOUT, PROMPT_TIMEOUT = 180, 600

pytestmark = pytest.mark.skipif(not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout to run a real server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen, log: Path):
        self.url, self.process, self.log = url, process, log

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            pytest.fail(f"POST {path} -> {err.code}: {err.read().decode()[:3000]}")

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory, micro_checkpoint):
    base = tmp_path_factory.mktemp("comfy")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    (base / "custom_nodes" / "tiny_umt5.py").symlink_to(REPO / "tests" / "comfyui_tiny_umt5.py")
    write_wan_models(base / "models", text_dim=4096)  # umt5-xxl's width: core's Wan DiT assumes it
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
    if not DEFAULT_MODEL.is_file():
        env["SORA_MODEL"] = micro_checkpoint
    log = base / "server.log"
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", "--disable-api-nodes", "--preview-method", "auto"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=COMFYUI, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.time() + BOOT_TIMEOUT
        while True:
            assert process.poll() is None, f"ComfyUI exited during startup:\n{srv.tail()}"
            try:
                srv.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.time() < deadline, f"ComfyUI did not answer within {BOOT_TIMEOUT}s:\n{srv.tail()}"
                time.sleep(1)
        yield srv
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def test_the_pack_imports_and_lists_every_node(server, object_info):
    from nodes import NODE_CLASS_MAPPINGS

    assert "IMPORT FAILED" not in server.tail()
    missing = set(NODE_CLASS_MAPPINGS) - set(object_info)
    assert not missing, f"not in /object_info: {sorted(missing)}\n{server.tail()}"
    loader = object_info["SoraModelLoader"]
    assert loader["output"] == ["SORA_DIT", "SORA_TEXT_ENCODER", "SORA_VAE"]
    assert "sora-tiny.safetensors" in loader["input"]["required"]["ckpt_name"][0]


def test_the_web_extension_and_workflows_are_served(server):
    assert any(PACK_NAME in path and path.endswith("sora_text.js") for path in server.get("/extensions"))
    templates = server.get("/api/workflow_templates")
    assert sorted(templates.get(PACK_NAME, [])) == sorted(p.stem for p in WORKFLOWS)
    for name in templates[PACK_NAME]:  # what the template browser asks for: the workflow and its thumbnail
        for suffix in (".json", ".jpg"):
            url = f"{server.url}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name + suffix)}"
            with urllib.request.urlopen(url, timeout=60) as r:
                assert r.status == 200 and r.read(), url


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_match_the_servers_node_definitions(path, object_info):
    for node in json.loads(path.read_text())["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        info = object_info[node["type"]]
        assert [o["type"] for o in node["outputs"]] == info["output"], node["type"]
        known = set(info["input"].get("required", {})) | set(info["input"].get("optional", {}))
        assert {i["name"] for i in node["inputs"]} <= known, node["type"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_on_the_server(server, object_info, path):
    workflow = json.loads(path.read_text())
    prompt = reduced(ui_to_api(workflow, object_info_specs(object_info)))
    queued = server.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4()),
                                     "extra_data": {"extra_pnginfo": {"workflow": workflow}}})
    assert not queued.get("node_errors"), queued["node_errors"]
    prompt_id = queued["prompt_id"]
    deadline = time.time() + PROMPT_TIMEOUT
    while not (entry := server.get(f"/history/{prompt_id}").get(prompt_id)) or not entry["status"].get("completed"):
        if entry and entry["status"].get("status_str") == "error":
            break
        assert time.time() < deadline, f"{path.stem} still running after {PROMPT_TIMEOUT}s"
        time.sleep(0.5)
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:4000]
    saved = [nid for nid, node in prompt.items() if node["class_type"] in ("SoraSaveVideo", "SoraSaveImage")]
    for nid in saved:
        assert entry["outputs"][nid]["images"], f"{path.stem}: node {nid} saved nothing"
    if path.stem in WAN_EXPECTED:  # the files the server wrote: frames and size, as the headless run gives them
        files = {prompt[nid]["inputs"]["filename_prefix"]: _frames(server, entry["outputs"][nid]["images"][0])
                 for nid in saved}
        want = {k: v for k, v in WAN_EXPECTED[path.stem].items() if k != "preview"}
        assert {k: (len(v), v[0].shape[1], v[0].shape[0]) for k, v in files.items()} == want
        if "core nodes" in path.stem:  # core's clip, extended by core's KSampler, starts with that clip
            source, longer = files["sora/wan_core_source"], files["sora/wan_core_extended"]
            assert max(abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(source[:5], longer[:5])) < 2


def _frames(server: Server, image: dict) -> list:
    """The frames of a file the server saved, as uint8 arrays (H, W, 3)."""
    import io

    import numpy as np
    from PIL import Image, ImageSequence

    query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as r:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(io.BytesIO(r.read())))]


def _watch(server: Server, prompt: dict, *, interrupt_after_progress: bool = False, extra_data: dict | None = None) -> dict:
    """Queue `prompt` with a websocket open; collect its progress events, preview images (the count and
    the last one's JPEG bytes) and final event."""
    import asyncio
    import struct

    import aiohttp

    async def run():
        client_id = str(uuid.uuid4())
        seen = {"progress": [], "previews": 0, "last_preview": None, "end": None}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                response = await session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id,
                                                                            "extra_data": extra_data or {}})
                prompt_id = seen["prompt_id"] = (await response.json())["prompt_id"]
                while seen["end"] is None:
                    msg = await asyncio.wait_for(ws.receive(), PROMPT_TIMEOUT)
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        if struct.unpack(">I", msg.data[:4])[0] in (1, 2, 4):  # preview events
                            seen["previews"] += 1
                            seen["last_preview"] = msg.data[msg.data.find(b"\xff\xd8\xff"):]  # the JPEG
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data", {})
                    if data.get("prompt_id", prompt_id) != prompt_id:
                        continue
                    if event["type"] == "progress":
                        seen["progress"].append((data["node"], data["value"], data["max"]))
                        if interrupt_after_progress and len(seen["progress"]) == 1:
                            await session.post(f"{server.url}/interrupt", json={})
                    elif event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                        seen["end"] = event["type"]
        return seen

    return asyncio.run(run())


def _text_to_video(object_info: dict, *, seed: int, steps: int) -> tuple[dict, str]:
    prompt = ui_to_api(json.loads((REPO / "workflows" / "01. Text to video.json").read_text()), object_info_specs(object_info))
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "SoraDiTSampler")
    prompt[sampler]["inputs"].update(seed=seed, steps=steps)  # a new seed: not answered from the cache
    return prompt, sampler


def test_the_sampler_shows_progress_and_previews_every_step(server, object_info):
    prompt, sampler = _text_to_video(object_info, seed=424242, steps=6)
    seen = _watch(server, prompt)
    assert seen["end"] == "execution_success"
    assert [(v, m) for node, v, m in seen["progress"] if node == sampler] == [(i, 6) for i in range(1, 7)]
    assert seen["previews"] >= 6


@pytest.mark.parametrize("method", ["taesd", "auto"])
def test_taesd_and_auto_previews_show_the_decoded_colours(server, object_info, method):
    """--preview-method taesd or auto (here per prompt, as the frontend's setting sends it) decodes the
    preview with the model's own VAE, so the last preview looks like the saved video's first frame."""
    import io

    import numpy as np
    from PIL import Image

    prompt, _ = _text_to_video(object_info, seed=626262 + len(method), steps=6)  # a seed each: no cached result
    seen = _watch(server, prompt, extra_data={"preview_method": method})
    assert seen["end"] == "execution_success" and seen["last_preview"]
    save = next(k for k, n in prompt.items() if n["class_type"] == "SoraSaveVideo")
    deadline = time.time() + 60
    while not (entry := server.get(f"/history/{seen['prompt_id']}").get(seen["prompt_id"])):  # written just after
        assert time.time() < deadline
        time.sleep(0.2)
    image = entry["outputs"][save]["images"][0]
    query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=60) as r:
        first = Image.open(io.BytesIO(r.read())).convert("RGB")  # the animated WebP's first frame
    preview = Image.open(io.BytesIO(seen["last_preview"])).convert("RGB").resize(first.size, Image.BICUBIC)
    difference = np.abs(np.asarray(preview, np.float32) - np.asarray(first, np.float32)).mean((0, 1)) / 255
    assert difference.max() < 0.05, difference


def test_cancel_stops_the_sampler(server, object_info):
    prompt, _ = _text_to_video(object_info, seed=525252, steps=1000)
    assert _watch(server, prompt, interrupt_after_progress=True)["end"] == "execution_interrupted"
