"""Recaptioning: short prompts -> detailed captions, and captioning folders of clips.

The Sora report trains on highly descriptive captions and, at inference, expands the user's
short prompt into the same style. Two expanders:

* offline (default): parses the prompt in the synthetic world's vocabulary, samples a scene
  that honours it (seeded), and describes that scene with the very code that wrote the
  training captions, so both share one grammar. Words it does not understand are kept.
* llm: any OpenAI-compatible chat endpoint (OpenAI, Ollama, llama.cpp server, vLLM), standard
  library only, system prompt in prompts/recaption_system.txt.

`caption_folder` writes sidecar .txt captions for a folder of clips through a vision chat
endpoint, for training on real videos.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import math
import numbers
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .data.prompt_parser import parse_prompt
from .data.synthetic import Scene, describe, sample_scene
from .flow import check_seed
from .fsutil import atomic_write
from .pipeline import Defaults

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).parent / "prompts"
BACKENDS = ("offline", "llm")
# Frame size of the scene the offline expander imagines: the training world's typical size (places are
# fractions of the frame and sizes follow its area, so a layout fits any clip size).
_SCENE_SIZE = (64, 64)
# The size the plan gives an object the prompt names without one. Training draws "small" for up to half
# of its objects, but a small square or star spans a few latent cells and comes out round; "large"
# objects fill the frame and run into each other. Medium keeps shapes readable and objects apart
# (docs/training.md section 21).
PLAN_SIZE = "medium"


class RecaptionError(RuntimeError):
    """A chat endpoint could not produce a caption (unreachable, timeout, bad answer)."""


def _check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt={prompt!r} is empty; give a short description such as 'a red ball bouncing'")
    return prompt.strip()


def expand_offline(prompt: str, *, seed: int = 0) -> str:
    """Deterministic detailed caption for a short prompt, no network (see module docstring)."""
    return plan_offline(prompt, seed=seed)[0]


def plan(prompt: str, *, seed: int = 0, frames: int = Defaults.frames) -> tuple[str, Scene]:
    """`recaption`'s offline caption and the scene it describes for a clip of `frames` frames: the layout
    a grounded model follows (`sora_core.grounding`): where each object starts, and where it goes. Plan for
    the clip's own length: a plan stretched over fewer frames moves its objects faster than anything in
    training, and fast movers blur round in the VAE's 4-frame latents (docs/training.md section 22)."""
    caption, scene = plan_offline(prompt, seed=seed, frames=frames)
    return plain_text(caption), scene


def check_plan_frames(frames) -> int:
    """A plan's clip length: a whole number of frames, 1 or more."""
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise ValueError(f"frames={frames!r} is not allowed: plan for a clip of 1 frame or more (the clip's "
                         f"own length, e.g. {Defaults.frames})")
    return int(frames)


def plan_offline(prompt: str, *, seed: int = 0, frames: int = Defaults.frames) -> tuple[str, Scene]:
    prompt = _check_prompt(prompt)
    frames = check_plan_frames(frames)
    spec = parse_prompt(prompt)
    rng = np.random.default_rng(check_seed(seed))
    width, height = _SCENE_SIZE
    options = spec.scene_options(rng)
    options.setdefault("camera", "still")  # users who want a pan say so
    objects = options.get("objects")
    if objects and not options.get("occlusion"):  # an occlusion keeps its small mover behind a large occluder
        options["objects"] = [{**o, "size": o.get("size") or PLAN_SIZE} for o in objects]
    scene = sample_scene(rng, width, height, 1 if spec.image else frames, **options)
    caption = describe(scene, rng)
    if spec.leftover:
        caption += " Additional details: " + "; ".join(spec.leftover) + "."
    return caption, scene


def chat_url(endpoint: str | None) -> str:
    """Full chat-completions URL from a base URL ('http://host:8080', '.../v1') or a full one."""
    if not endpoint or not isinstance(endpoint, str):
        raise ValueError(f"endpoint={endpoint!r} is not usable; give a URL such as http://127.0.0.1:8080/v1")
    url = endpoint.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint={endpoint!r} is not an http(s) URL; e.g. http://127.0.0.1:11434/v1")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


MAX_REPLY_BYTES = 1 << 20  # a caption is a few hundred bytes; anything near this is a broken or hostile server


class _Deadline:
    """One deadline for a whole HTTP exchange. urllib's timeout bounds each socket operation, so a
    server that drip-feeds bytes could hold a request for ever; at the deadline this shuts down the
    connection's socket, which ends whatever connect or read is waiting."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        self.expired = True  # first: a connection made after this sees it (see `opener`)
        for sock in list(self._sockets):
            _shut(sock)

    def opener(self) -> urllib.request.OpenerDirector:
        """urllib's opener (proxies, redirects) whose connections this deadline can cut."""
        deadline = self

        def tracked(cls):
            class Connection(cls):
                def connect(self):
                    super().connect()
                    # The socket itself, not the connection: urllib drops `conn.sock` once the
                    # headers are in, and the body is read through the response's own reference.
                    deadline._sockets.append(self.sock)
                    if deadline.expired:
                        _shut(self.sock)

            return Connection

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(tracked(http.client.HTTPConnection), req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(tracked(http.client.HTTPSConnection), req, context=self._context)

        return urllib.request.build_opener(HTTP, HTTPS)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def chat(endpoint: str, messages: list[dict], *, model: str | None = None, api_key: str | None = None,
         timeout: float = 30.0, seed: int | None = None, temperature: float = 0.7, max_tokens: int = 400) -> str:
    """One OpenAI-style chat completion within `timeout` seconds in all (connecting, waiting and
    reading); returns the reply text or raises RecaptionError."""
    url = chat_url(endpoint)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout={timeout!r} is not allowed: use a number of seconds > 0")
    body = {"messages": messages, "temperature": temperature, "max_tokens": max_tokens}
    if model:
        body["model"] = model
    if seed is not None:
        body["seed"] = check_seed(seed) % 2**63  # servers keep seeds as signed 64-bit integers
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    deadline = _Deadline(timeout)
    try:
        with deadline:
            try:
                with deadline.opener().open(request, timeout=timeout) as response:
                    raw = response.read(MAX_REPLY_BYTES + 1)
            except urllib.error.HTTPError as e:
                detail = e.read(300).decode("utf-8", "replace")
                raise RecaptionError(f"chat endpoint {url} answered HTTP {e.code}: {detail}") from e
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, IncompleteRead, ...
        if deadline.expired or isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
            raise RecaptionError(f"chat endpoint {url} did not answer within {timeout} s") from e
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise RecaptionError(f"chat endpoint {url} is unreachable or broke off: {reason}") from e
    if deadline.expired:  # the cut can also look like a short but complete read
        raise RecaptionError(f"chat endpoint {url} did not answer within {timeout} s")
    if len(raw) > MAX_REPLY_BYTES:
        raise RecaptionError(f"chat endpoint {url} sent more than {MAX_REPLY_BYTES >> 10} KiB; a caption is "
                             f"far shorter, so the reply was refused")
    try:
        text = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise RecaptionError(f"chat endpoint {url} sent no chat completion: {raw[:200]!r}") from e
    text = _clean_reply(text if isinstance(text, str) else "")
    if not text:
        raise RecaptionError(f"chat endpoint {url} returned an empty caption")
    return text


def _clean_reply(text: str) -> str:
    """Drop reasoning blocks and wrapping quotes some models add around the caption."""
    text = re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()
    text = re.sub(r"^(?:caption|detailed caption)\s*:\s*", "", text, flags=re.I)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _system_prompt(name: str) -> str:
    return (PROMPTS_DIR / name).read_text(encoding="utf-8").strip()


def recaption(prompt: str, *, seed: int = 0, backend: str = "offline", endpoint: str | None = None,
              model: str | None = None, api_key: str | None = None, timeout: float = 30.0,
              fallback: bool = True) -> str:
    """Expand a short prompt into a detailed caption in the training captions' style.

    backend="llm" asks `endpoint`; if that fails, `fallback=True` logs a warning and returns
    the offline expansion, `fallback=False` raises RecaptionError naming endpoint and reason.
    """
    prompt = _check_prompt(prompt)
    check_seed(seed)
    if backend == "offline":
        return plain_text(expand_offline(prompt, seed=seed))
    if backend != "llm":
        raise ValueError(f"backend={backend!r} is not allowed; choose one of: {', '.join(BACKENDS)}")
    messages = [{"role": "system", "content": _system_prompt("recaption_system.txt")},
                {"role": "user", "content": prompt}]
    try:
        return plain_text(chat(endpoint, messages, model=model, api_key=api_key, timeout=timeout, seed=seed))
    except (RecaptionError, ValueError) as e:
        if not fallback:
            raise
        log.warning("recaption: %s; using the offline expansion instead", e)
        return plain_text(expand_offline(prompt, seed=seed))


# ComfyUI's CLIPTextEncode reads "(words)" / "(words:1.5)" as emphasis weights and uses "\0\1" / "\0\2"
# as its own escapes; without brackets and control characters a caption means the same to every encoder.
_BRACKETS = re.compile(r"[()]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]+")


def plain_text(caption: str) -> str:
    """A caption without brackets or control characters (line breaks and tabs kept), spaces tidied."""
    caption = _CONTROL.sub(" ", _BRACKETS.sub("", caption.replace("\r\n", "\n")))
    return re.sub(r" ?\n ?", "\n", re.sub(r"[ ]{2,}", " ", caption)).strip()


# --------------------------------------------------------------------------- folders


@dataclass
class CaptionReport:
    """What `caption_folder` did, clip by clip."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # a caption was already there
    failed: dict[str, str] = field(default_factory=dict)  # clip -> why it could not be read


def _frame_urls(path: Path, frames: int, max_side: int) -> list[str]:
    """A few frames spread over the clip, as JPEG data URLs for a vision chat request."""
    from .io import probe_video, read_video  # the io module is heavier; only folders need it

    info = probe_video(path)
    if info.num_frames > frames and info.duration > 0:
        video, _ = read_video(path, fps=frames / info.duration, max_frames=frames)
    else:
        video, _ = read_video(path, max_frames=frames)
    picks = np.linspace(0, len(video) - 1, min(frames, len(video))).round().astype(int)
    urls = []
    for frame in video[picks]:
        scale = max_side / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise ValueError(f"could not encode a frame of {str(path)!r} as JPEG")
        urls.append("data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode())
    return urls


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see half a caption."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text.strip() + "\n", encoding="utf-8"))


def caption_folder(folder: str | os.PathLike, endpoint: str, model: str | None = None, *,
                   api_key: str | None = None, frames: int = 4, overwrite: bool = False,
                   timeout: float = 60.0, recursive: bool = False, max_side: int = 512) -> CaptionReport:
    """(Re)caption every clip in `folder` through a vision chat endpoint: `<clip stem>.txt` sidecars.

    Existing sidecars are kept unless `overwrite`. A clip that cannot be read is reported
    and skipped; an endpoint failure stops the run (it would fail for every clip alike).
    """
    from .io import READ_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder={str(folder)!r} is not a directory")
    if frames < 1:
        raise ValueError(f"frames={frames!r} is not allowed; use an integer >= 1")
    chat_url(endpoint)  # fail on a malformed endpoint before touching any clip
    pattern = "**/*" if recursive else "*"
    clips = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in READ_EXTENSIONS
                   and not p.name.startswith("."))
    system = _system_prompt("caption_system.txt")
    report = CaptionReport()
    for clip in clips:
        sidecar = clip.with_suffix(".txt")
        if sidecar.exists() and not overwrite:
            report.skipped.append(str(clip))
            continue
        try:
            urls = _frame_urls(clip, frames, max_side)
        except (ValueError, OSError) as e:
            log.warning("caption_folder: skipping %s: %s", clip, e)
            report.failed[str(clip)] = str(e)
            continue
        what = "image" if len(urls) == 1 else f"video ({len(urls)} frames in order)"
        content = [{"type": "text", "text": f"Caption this {what}."}]
        content += [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        messages = [{"role": "system", "content": system}, {"role": "user", "content": content}]
        caption = chat(endpoint, messages, model=model, api_key=api_key, timeout=timeout, temperature=0.2)
        _write_atomic(sidecar, caption)
        report.written.append(str(sidecar))
    return report


# --------------------------------------------------------------------------- command line


KEY_HELP = "API key (default: $SORA_LLM_API_KEY or $OPENAI_API_KEY)"


def add_recaption_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS, default="offline")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
    p.add_argument("--model")
    p.add_argument("--api-key", help=KEY_HELP)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole request")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of expanding offline")


def add_caption_folder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--model")
    p.add_argument("--api-key", help=KEY_HELP)
    p.add_argument("--frames", type=int, default=4, help="frames per clip sent to the model")
    p.add_argument("--overwrite", action="store_true", help="replace existing .txt captions")
    p.add_argument("--recursive", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for each clip's whole request")


def _api_key(args) -> str | None:
    return args.api_key or os.environ.get("SORA_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")


def run_recaption(args) -> int:
    print(recaption(args.prompt, seed=args.seed, backend=args.backend, endpoint=args.endpoint, model=args.model,
                    api_key=_api_key(args), timeout=args.timeout, fallback=not args.no_fallback))
    return 0


def run_caption_folder(args) -> int:
    report = caption_folder(args.folder, args.endpoint, args.model, api_key=_api_key(args), frames=args.frames,
                            overwrite=args.overwrite, timeout=args.timeout, recursive=args.recursive)
    print(f"wrote {len(report.written)}, kept {len(report.skipped)} existing, failed {len(report.failed)}")
    for clip, why in report.failed.items():
        print(f"  failed: {clip}: {why}")
    return 1 if report.failed else 0
