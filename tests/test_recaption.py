"""Recaptioning: offline expansion, the LLM backend against a local fake server, folder captioning."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import sora_core.recaption as rc
from sora_core.data.prompt_parser import parse_prompt
from sora_core.data.synthetic import render, sample_scene, short_prompt
from sora_core.__main__ import build_parser
from sora_core.recaption import RecaptionError, caption_folder, chat_url, recaption


def test_offline_is_deterministic_per_seed_and_varies_across_seeds():
    a = recaption("a red ball bouncing", seed=3)
    assert a == recaption("a red ball bouncing", seed=3)
    others = {recaption("a red ball bouncing", seed=s) for s in range(6)}
    assert len(others) >= 4
    for text in others | {a}:
        low = text.lower()
        assert "red circle" in low and "bounc" in low
        assert len(text.split()) > 20  # a detailed caption, not an echo


@pytest.mark.parametrize("prompt,facts", [
    ("two squares, blue and yellow, sliding left", ["blue square", "yellow square", "left"]),
    ("a small blue star passing behind a red square", ["blue star", "red square", "behind", "small|little"]),
    ("a green triangle spinning clockwise on a navy background", ["green triangle", "clockwise", "navy"]),
    ("a purple box growing as the camera pans right", ["purple square", "grow", "pans", "right"]),
    ("an orange cube falling on a white backdrop with dots", ["orange square", "down", "white", "dots"]),
    ("an image of a pink star", ["pink star", "image|picture"]),
])
def test_offline_keeps_the_prompt_facts(prompt, facts):
    for seed in range(3):
        text = recaption(prompt, seed=seed).lower()
        for fact in facts:
            assert any(f in text for f in fact.split("|")), (fact, text)


def test_unknown_words_are_kept():
    text = recaption("a red ball bouncing in a spooky castle", seed=0)
    assert "spooky castle" in text and "red circle" in text
    text = recaption("a dog chasing a cat", seed=1)
    assert "a dog chasing a cat" in text
    assert any(shape in text for shape in ("circle", "square", "triangle", "star"))


def test_parser_reads_back_what_short_prompt_writes():
    # The training prompts and the expander share vocabulary: every short prompt must parse
    # back to the scene's colours, shapes and motions.
    for seed in range(60):
        rng = np.random.default_rng(seed)
        scene = sample_scene(rng, 64, 64, 17, camera="still")
        spec = parse_prompt(short_prompt(scene, rng))
        want = sorted((o.color, o.shape) for o in scene.objects)
        assert sorted((o["color"], o["shape"]) for o in spec.objects) == want, seed
        motions = {o.color: o.motion for o in scene.objects}
        for o in spec.objects:
            if o["motion"] is not None:
                assert o["motion"] == motions[o["color"]], (seed, o)


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_prompt_is_rejected(bad):
    with pytest.raises(ValueError, match="prompt="):
        recaption(bad)


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend='gpt'"):
        recaption("a ball", backend="gpt")


def test_chat_url_forms():
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/api/chat/completions") == "http://h:1/api/chat/completions"
    with pytest.raises(ValueError, match="endpoint='ftp://x'"):
        chat_url("ftp://x")


class FakeChat:
    """A local OpenAI-style chat server in a thread; records the requests it gets."""

    def __init__(self, reply="A detailed caption.", delay=0.0, status=200, behaviour=None):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if behaviour is not None:
                    try:
                        return behaviour(self)
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the client gave up
                time.sleep(delay)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_chat():
    servers = []

    def make(**kw):
        servers.append(FakeChat(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_llm_backend_success(fake_chat):
    server = fake_chat(reply='<think>plan</think>"A large red circle bounces on a navy background."')
    text = recaption("a red ball bouncing", backend="llm", endpoint=server.url + "/v1", model="tiny",
                     api_key="k", seed=5)
    assert text == "A large red circle bounces on a navy background."
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k"
    assert req["body"]["model"] == "tiny" and req["body"]["seed"] == 5
    system, user = req["body"]["messages"]
    assert system["role"] == "system" and "Example" in system["content"]
    assert user == {"role": "user", "content": "a red ball bouncing"}


def test_llm_unreachable_raises_or_falls_back(caplog):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(RecaptionError, match="127.0.0.1:.*unreachable"):
        recaption("a red ball", backend="llm", endpoint=endpoint, timeout=2, fallback=False)
    with caplog.at_level("WARNING"):
        text = recaption("a red ball", backend="llm", endpoint=endpoint, timeout=2, seed=1)
    assert text == recaption("a red ball", seed=1)
    assert "unreachable" in caplog.text


def test_llm_timeout_is_reported(fake_chat):
    server = fake_chat(delay=1.0)
    with pytest.raises(RecaptionError, match="did not answer within 0.2 s"):
        recaption("a red ball", backend="llm", endpoint=server.url, timeout=0.2, fallback=False)


def test_llm_http_error_names_the_status(fake_chat):
    server = fake_chat(status=500)
    with pytest.raises(RecaptionError, match="HTTP 500"):
        recaption("a red ball", backend="llm", endpoint=server.url, fallback=False)


def _headers(handler, **headers):
    handler.send_response(200)
    for k, v in headers.items():
        handler.send_header(k.replace("_", "-"), v)
    handler.end_headers()


def drip(handler):
    """A valid start, then one byte every 50 ms: each read is quick, the whole never ends."""
    _headers(handler, Content_Length="100000")
    for _ in range(100000):
        handler.wfile.write(b" ")
        time.sleep(0.05)


def huge(handler):
    payload = json.dumps({"choices": [{"message": {"content": "a" * (2 << 20)}}]}).encode()
    _headers(handler, Content_Length=str(len(payload)))
    handler.wfile.write(payload)


def truncated(handler):
    _headers(handler, Content_Length="1000")
    handler.wfile.write(b'{"choices": [')


def truncated_chunks(handler):  # http.client raises IncompleteRead here
    _headers(handler, Transfer_Encoding="chunked")
    handler.wfile.write(b"20\r\n{\"choices\": [")


def hang_up(handler):
    handler.close_connection = True


def test_a_drip_feeding_server_is_cut_at_the_overall_deadline(fake_chat):
    server = fake_chat(behaviour=drip)
    with pytest.raises(RecaptionError, match="did not answer within 0.5 s"):
        recaption("a red ball", backend="llm", endpoint=server.url, timeout=0.5, fallback=False)


@pytest.mark.parametrize("behaviour,message", [(huge, "sent more than 1024 KiB"), (truncated, "sent no chat completion"),
                                               (truncated_chunks, "broke off: IncompleteRead"),
                                               (hang_up, "broke off: Remote end closed connection")])
def test_broken_replies_are_errors_that_fall_back_offline(fake_chat, caplog, behaviour, message):
    server = fake_chat(behaviour=behaviour)
    with pytest.raises(RecaptionError, match=message):
        recaption("a red ball", backend="llm", endpoint=server.url, timeout=5, fallback=False)
    with caplog.at_level("WARNING"):
        assert recaption("a red ball", backend="llm", endpoint=server.url, timeout=5, seed=1) == recaption("a red ball", seed=1)
    assert "using the offline expansion" in caplog.text


def test_seeds_cover_comfyuis_range_and_are_checked(fake_chat):
    with pytest.raises(ValueError, match=r"seed=-1 is not allowed: use an integer from 0 to 2\*\*64 - 1"):
        recaption("a red ball", seed=-1)
    assert recaption("a red ball", seed=2**64 - 1) != recaption("a red ball", seed=0)
    server = fake_chat()
    recaption("a red ball", backend="llm", endpoint=server.url, seed=2**64 - 1)
    assert server.requests[0]["body"]["seed"] == (2**64 - 1) % 2**63  # servers keep signed 64-bit seeds


def _make_clips(folder: Path) -> list[Path]:
    from sora_core.io import write_video

    clips = []
    for i, (w, h, t) in enumerate([(48, 32, 12), (32, 32, 1)]):
        scene = sample_scene(np.random.default_rng(i), w, h, t)
        path = folder / (f"clip{i}.gif" if t > 1 else f"still{i}.png")
        write_video(path, render(scene), fps=8)
        clips.append(path)
    return clips


def test_caption_folder_writes_sidecars(fake_chat, tmp_path, monkeypatch):
    server = fake_chat(reply="A caption from the vision model.")
    clips = _make_clips(tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    renames = []
    real_replace = rc.os.replace
    monkeypatch.setattr(rc.os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b)))

    report = caption_folder(tmp_path, server.url, "vision-model", frames=3)
    assert sorted(report.written) == sorted(str(c.with_suffix(".txt")) for c in clips)
    assert list(report.failed) == [str(tmp_path / "broken.mp4")]
    for c in clips:
        assert c.with_suffix(".txt").read_text() == "A caption from the vision model.\n"
    # Written atomically: a temp file in the same folder renamed onto the sidecar.
    assert len(renames) == 2 and all(Path(a).parent == tmp_path and Path(a).name.startswith(".") for a, _ in renames)
    assert not list(tmp_path.glob(".*.tmp"))
    video_request = next(r for r in server.requests if "video" in r["body"]["messages"][1]["content"][0]["text"])
    parts = video_request["body"]["messages"][1]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 3 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")

    again = caption_folder(tmp_path, server.url, "vision-model")
    assert again.written == [] and len(again.skipped) == 2
    server.requests.clear()
    caption_folder(tmp_path, server.url, overwrite=True)
    assert len(server.requests) == 2


def test_caption_folder_stops_when_endpoint_is_down(tmp_path):
    _make_clips(tmp_path)
    with pytest.raises(RecaptionError, match="unreachable"):
        caption_folder(tmp_path, f"http://127.0.0.1:{_closed_port()}", timeout=2)
    assert not list(tmp_path.glob("*.txt"))


def test_cli_subcommands(capsys, fake_chat, tmp_path):
    parser = build_parser()
    args = parser.parse_args(["recaption", "a blue star spinning", "--seed", "2"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == recaption("a blue star spinning", seed=2)

    server = fake_chat(reply="Caption.")
    _make_clips(tmp_path)
    args = parser.parse_args(["caption-folder", str(tmp_path), "--endpoint", server.url, "--frames", "2"])
    assert args.func(args) == 0
    assert "wrote 2" in capsys.readouterr().out


def test_place_phrases_set_where_objects_start():
    for seed in range(3):
        text = recaption("an image of a yellow star in the top left corner", seed=seed)
        assert "top left" in text and "Additional details" not in text
    spec = parse_prompt("a red ball at the bottom and a blue box moving left")
    red, blue = spec.objects
    assert (red["x"], red["y"]) == (0.5, 0.8) and blue["motion"] == "left" and blue["x"] is None
