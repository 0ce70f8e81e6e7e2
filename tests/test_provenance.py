"""C2PA provenance: what the written files say about themselves, read back with c2pa's own Reader."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import sys

import numpy as np
import pytest

c2pa = pytest.importorskip("c2pa")

from sora_core import __version__, provenance  # noqa: E402
from sora_core.io import read_video, write_video  # noqa: E402
from sora_core.provenance import DIGITAL_SOURCE_TYPE, Provenance, ProvenanceError, mime_type  # noqa: E402

FRAMES = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(provenance, "_warned", set())  # each test sees its own "once"


def store(path) -> dict:
    """The manifest store, straight from c2pa's Reader."""
    with open(path, "rb") as f, c2pa.Reader(mime_type(path), f) as reader:
        return json.loads(reader.json())


def active(s: dict) -> dict:
    return s["manifests"][s["active_manifest"]]


def assertion(manifest: dict, label: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == label)


def failures(s: dict) -> set[str]:
    return {f["code"] for f in s["validation_results"]["activeManifest"].get("failure", [])}


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == provenance.__name__ and r.levelno == logging.WARNING]


def make_chain(folder, common_name: str) -> tuple[str, str]:
    """A user's own signer: a CA and a signing certificate under it, as a studio would have."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, public, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(name("Studio CA")).public_key(public)
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False), critical=True))
        if not ca:
            b = (b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        return b.add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False).sign(ca_key, hashes.SHA384())

    chain = [build(name(common_name), key.public_key(), False), build(name("Studio CA"), ca_key.public_key(), True)]
    cert, key_file = folder / f"{common_name}.pem", folder / f"{common_name}.key"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert), str(key_file)


# -- what the manifest says --------------------------------------------------------------------------------

def test_a_generated_video_says_it_is_ai_made_by_sora_nodes_with_the_model_hash(tmp_path, micro_checkpoint):
    out = write_video(tmp_path / "gen.mp4", FRAMES, 8, provenance=Provenance(model=micro_checkpoint))
    s = store(out)
    m = active(s)
    created = assertion(m, "c2pa.actions.v2")["actions"][0]
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert created["softwareAgent"] == {"name": "sora-nodes", "version": __version__}
    generation = assertion(m, provenance.ASSERTION)
    with open(micro_checkpoint, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    assert generation["model"] == {"file": "micro.safetensors", "family": "sora-micro", "sha256": sha}
    assert generation["operation"] == "generate" and m["title"] == "gen.mp4"
    # signed by the local signer: valid, but not trusted by anyone
    assert s["validation_state"] == "Valid" and failures(s) == {"signingCredential.untrusted"}
    assert m["signature_info"]["common_name"].startswith("sora-nodes local signer")


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".webp", ".png", ".jpg"])
def test_every_signable_format_carries_a_valid_manifest_and_the_same_pixels(tmp_path, ext):
    frames = FRAMES[:1] if ext == ".jpg" else FRAMES
    signed = write_video(tmp_path / f"s{ext}", frames, 8)
    plain = write_video(tmp_path / f"p{ext}", frames, 8, provenance=None)
    assert store(signed)["validation_state"] == "Valid"
    assert np.array_equal(read_video(signed)[0], read_video(plain)[0])


def test_an_extend_of_an_extend_keeps_the_whole_ingredient_chain(tmp_path):
    a = write_video(tmp_path / "a.mp4", FRAMES, 8)
    b = write_video(tmp_path / "b.mp4", FRAMES, 8, provenance=Provenance("extend", sources=[a]))
    c = write_video(tmp_path / "c.mp4", FRAMES, 8, provenance=Provenance("extend", sources=[b]))
    s = store(c)
    assert s["validation_state"] == "Valid" and len(s["manifests"]) == 3
    titles, label = [], s["active_manifest"]
    while True:
        m = s["manifests"][label]
        titles.append(m["title"])
        assert assertion(m, "c2pa.actions.v2")["actions"][0]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
        if not m.get("ingredients"):
            break
        (ingredient,) = m["ingredients"]
        assert ingredient["relationship"] == "componentOf"
        placed = assertion(m, "c2pa.actions.v2")["actions"][1]
        assert placed["action"] == "c2pa.placed" and placed["parameters"]["ingredients"]
        label = ingredient["active_manifest"]
    assert titles == ["c.mp4", "b.mp4", "a.mp4"]


def test_sdedit_records_its_input_as_what_the_model_redrew_and_connect_both_clips(tmp_path):
    a = write_video(tmp_path / "a.mp4", FRAMES, 8)
    plain = write_video(tmp_path / "camera.mp4", FRAMES, 8, provenance=None)
    edit = active(store(write_video(tmp_path / "e.mp4", FRAMES, 8, provenance=Provenance("edit", sources=[a]))))
    assert [i["relationship"] for i in edit["ingredients"]] == ["inputTo"]
    assert assertion(edit, "c2pa.actions.v2")["actions"][0]["parameters"]["ingredients"]
    joined = active(store(write_video(tmp_path / "j.mp4", FRAMES, 8,
                                      provenance=Provenance("connect", sources=[a, plain]))))
    assert [i["title"] for i in joined["ingredients"]] == ["a.mp4", "camera.mp4"]
    assert "active_manifest" in joined["ingredients"][0] and "active_manifest" not in joined["ingredients"][1]


@pytest.mark.parametrize("ext, chunk, code", [(".mp4", b"mdat", "assertion.bmffHash.mismatch"),
                                              (".png", b"IDAT", "assertion.dataHash.mismatch")])
def test_a_tampered_file_fails_validation(tmp_path, ext, chunk, code):
    out = write_video(tmp_path / f"t{ext}", FRAMES, 8)
    assert store(out)["validation_state"] == "Valid"
    data = bytearray(out.read_bytes())
    at = data.find(chunk) + 64
    data[at:at + 8] = bytes(255 - x for x in data[at:at + 8])  # change the picture, not the manifest
    out.write_bytes(bytes(data))
    s = store(out)
    assert s["validation_state"] == "Invalid" and code in failures(s)


def test_the_prompt_is_recorded_only_when_asked_for(tmp_path):
    secret = "a very particular purple giraffe"
    hidden = write_video(tmp_path / "h.mp4", FRAMES, 8, provenance=Provenance(prompt=secret))
    assert "prompt" not in assertion(active(store(hidden)), provenance.ASSERTION)
    assert secret.encode() not in hidden.read_bytes()
    shown = write_video(tmp_path / "s.mp4", FRAMES, 8, provenance=Provenance(prompt=secret, include_prompt=True))
    assert assertion(active(store(shown)), provenance.ASSERTION)["prompt"] == secret


def test_no_provenance_writes_no_manifest(tmp_path):
    out = write_video(tmp_path / "n.mp4", FRAMES, 8, provenance=None)
    with open(out, "rb") as f:
        assert c2pa.Reader.try_create("video/mp4", f) is None
    assert provenance.read_manifest(out) is None


# -- never losing the output -------------------------------------------------------------------------------

def test_a_format_c2pa_cannot_carry_warns_once_and_still_writes(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        first = write_video(tmp_path / "a.webm", FRAMES, 8)
        second = write_video(tmp_path / "b.webm", FRAMES, 8)
    (message,) = warnings_of(caplog)
    assert ".webm" in message and "without a C2PA manifest" in message
    assert read_video(first)[0].shape == read_video(second)[0].shape == FRAMES.shape


def broken_native_library():
    raise OSError("libc2pa_c.so: cannot open shared object file")


@pytest.mark.parametrize("install", ["missing", "broken"])
def test_a_missing_or_broken_c2pa_warns_and_writes(tmp_path, monkeypatch, caplog, install):
    if install == "missing":
        monkeypatch.setitem(sys.modules, "c2pa", None)  # `import c2pa` now raises ImportError
    else:
        monkeypatch.setattr(c2pa, "sdk_version", broken_native_library)
    with caplog.at_level(logging.WARNING):
        out = write_video(tmp_path / "x.mp4", FRAMES, 8)
        write_video(tmp_path / "y.gif", FRAMES, 8)
    (message,) = warnings_of(caplog)
    assert "c2pa" in message and "pip install c2pa-python" in message
    assert read_video(out)[0].shape == FRAMES.shape
    with pytest.raises(ProvenanceError, match="c2pa"):
        Provenance(strict=True).check(tmp_path / "z.mp4")
    monkeypatch.undo()
    assert provenance.read_manifest(out) is None


def test_a_signing_failure_writes_the_file_unsigned_and_leaves_no_temp_files(tmp_path, monkeypatch, caplog):
    def broken(*_):
        raise c2pa.C2paError("simulated signing failure")

    monkeypatch.setattr(Provenance, "_sign", broken)
    with caplog.at_level(logging.WARNING):
        out = write_video(tmp_path / "x.mp4", FRAMES, 8)
    assert "simulated signing failure" in warnings_of(caplog)[0]
    assert read_video(out)[0].shape == FRAMES.shape and os.listdir(tmp_path) == ["x.mp4"]
    with pytest.raises(ProvenanceError, match="simulated"):
        write_video(tmp_path / "y.mp4", FRAMES, 8, provenance=Provenance(strict=True))
    assert os.listdir(tmp_path) == ["x.mp4"]  # strict: nothing half-written, no unsigned file


# -- signers -----------------------------------------------------------------------------------------------

def test_the_local_signer_is_made_once_in_the_config_folder_with_a_private_key(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    write_video(tmp_path / "a.mp4", FRAMES, 8)
    folder = tmp_path / "cfg" / "sora-nodes" / "c2pa"
    key = folder / "signer-key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600" and oct(folder.stat().st_mode & 0o777) == "0o700"
    before = key.read_bytes()
    write_video(tmp_path / "b.mp4", FRAMES, 8)
    assert key.read_bytes() == before
    sig = active(store(tmp_path / "b.mp4"))["signature_info"]
    assert sig["alg"].lower() == "es256" and "untrusted" in sig["issuer"]


def test_the_users_own_certificate_signs_from_arguments_or_the_environment(tmp_path, monkeypatch):
    cert, key = make_chain(tmp_path, "Studio Signer")
    out = write_video(tmp_path / "a.mp4", FRAMES, 8, provenance=Provenance(cert=cert, key=key))
    assert active(store(out))["signature_info"]["common_name"] == "Studio Signer"
    monkeypatch.setenv("SORA_C2PA_CERT", cert)
    monkeypatch.setenv("SORA_C2PA_KEY", key)
    out = write_video(tmp_path / "b.png", FRAMES, 8)
    sig = active(store(out))["signature_info"]
    assert sig["common_name"] == "Studio Signer" and sig["alg"].lower() == "es384"


def test_a_broken_signer_configuration_is_named(tmp_path):
    cert, _ = make_chain(tmp_path, "A")
    _, other_key = make_chain(tmp_path, "B")
    with pytest.raises(ProvenanceError, match="does not belong to the first certificate"):
        Provenance(cert=cert, key=other_key, strict=True).check("x.mp4")
    with pytest.raises(ProvenanceError, match="needs its private key"):
        Provenance(cert=cert, strict=True).check("x.mp4")
    with pytest.raises(ProvenanceError, match="does not exist"):
        Provenance(cert=cert, key=tmp_path / "nope.key", strict=True).check("x.mp4")


def test_the_model_hash_is_computed_once_per_file_version(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"one")
    assert provenance.file_sha256(weights) == hashlib.sha256(b"one").hexdigest()
    stat = weights.stat()
    provenance._hashes[(str(weights.resolve()), stat.st_mtime_ns, stat.st_size)] = "cached"
    assert provenance.file_sha256(weights) == "cached"  # not read again
    weights.write_bytes(b"two!")
    assert provenance.file_sha256(weights) == hashlib.sha256(b"two!").hexdigest()


# -- the command line ----------------------------------------------------------------------------------------

def test_strict_provenance_fails_before_the_model_is_even_loaded(tmp_path, micro_checkpoint, monkeypatch, capsys):
    from sora_core import pipeline
    from sora_core.__main__ import main

    loads = []
    monkeypatch.setattr(pipeline.Pipeline, "load", classmethod(lambda cls, *a, **k: loads.append(a)))
    for out, extra in [(tmp_path / "x.webm", []), (tmp_path / "y.mp4", ["--c2pa-cert", tmp_path / "missing.pem"])]:
        status = main(["generate", "x", "-o", str(out), "--model", micro_checkpoint, "--provenance-strict",
                       *map(str, extra)])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and "strict" in err and err.count("\n") == 1
        with pytest.raises(ProvenanceError, match="strict"):  # the same check, with its traceback
            main(["--debug", "generate", "x", "-o", str(out), "--model", micro_checkpoint, "--provenance-strict",
                  *map(str, extra)])
    assert loads == [] and os.listdir(tmp_path) == []


def test_the_cli_signs_with_the_model_the_prompt_and_the_users_certificate(tmp_path, micro_checkpoint):
    from sora_core.__main__ import main

    cert, key = make_chain(tmp_path, "CLI Signer")
    out = tmp_path / "out.mp4"
    assert main(["generate", "a red ball", "-o", str(out), "--model", micro_checkpoint, "--frames", "5",
                 "--width", "16", "--height", "16", "--steps", "1", "--no-recaption", "--include-prompt",
                 "--c2pa-cert", cert, "--c2pa-key", key]) == 0
    m = active(store(out))
    generation = assertion(m, provenance.ASSERTION)
    assert generation["prompt"] == "a red ball" and generation["model"]["family"] == "sora-micro"
    assert m["signature_info"]["common_name"] == "CLI Signer"
    assert read_video(out)[0].shape == (5, 16, 16, 3)


def test_the_cli_chains_an_extend_of_an_extend_and_no_provenance_writes_none(tmp_path, micro_checkpoint):
    from sora_core.__main__ import main

    tiny = ["--model", micro_checkpoint, "--width", "16", "--height", "16", "--steps", "1", "--no-recaption"]
    more = ["--new-frames", "4", "--context-frames", "4", *tiny]
    a, b, c, plain = (str(tmp_path / n) for n in ("a.gif", "b.mp4", "c.webp", "plain.png"))
    assert main(["generate", "a red ball", "-o", a, "--frames", "5", *tiny]) == 0
    assert main(["extend", a, "further right", "-o", b, *more]) == 0
    assert main(["extend", b, "further still", "-o", c, *more]) == 0
    s = store(c)
    assert s["validation_state"] == "Valid"
    chain, label = [], s["active_manifest"]
    while label:
        m = s["manifests"][label]
        generation = assertion(m, provenance.ASSERTION)
        chain.append((m["title"], generation["operation"], [i["title"] for i in m.get("ingredients", [])]))
        assert generation["model"]["family"] == "sora-micro" and "prompt" not in generation
        label = m["ingredients"][0]["active_manifest"] if m.get("ingredients") else None
    assert chain == [("c.webp", "extend", ["b.mp4"]), ("b.mp4", "extend", ["a.gif"]), ("a.gif", "generate", [])]
    assert main(["loop", c, "back to the start", "-o", plain, "--no-provenance", *tiny]) == 0
    with open(plain, "rb") as f:
        assert c2pa.Reader.try_create("image/png", f) is None
    assert read_video(plain)[0].shape[1:] == (16, 16, 3)


# -- inside ComfyUI: the save nodes -----------------------------------------------------------------------------

def test_the_save_nodes_write_signed_files_into_the_output_folder(tmp_path, monkeypatch, micro_checkpoint):
    import torch

    from nodes import host
    from nodes.loader import SoraModelLoader
    from nodes.save import SoraSaveImage, SoraSaveVideo

    monkeypatch.setattr(host, "OUTPUT_DIR", tmp_path / "output")
    monkeypatch.setenv("SORA_MODEL", micro_checkpoint)
    dit = SoraModelLoader().load(host.DEFAULT_MODEL_NAME, "auto", "cpu")[0]
    frames = torch.from_numpy(FRAMES).float() / 255
    positive = [[torch.zeros(1, 2, 4), {"sora_text": "a blue square"}]]
    result = SoraSaveVideo().save(frames, "sora/clip", "webp", 8.0, 90, "on", True, model=dit, positive=positive)
    entry = result["ui"]["images"][0]
    assert entry == {"filename": "clip_00001_.webp", "subfolder": "sora", "type": "output"}
    assert result["result"][1] == "sora/clip_00001_.webp [output]"  # as LoadImage names it
    saved = tmp_path / "output" / "sora" / entry["filename"]
    generation = assertion(active(store(saved)), provenance.ASSERTION)
    assert generation["prompt"] == "a blue square" and generation["model"]["family"] == "sora-micro"
    # the chain continues inside ComfyUI: the saved clip, extended, its `files` output as the source
    again = SoraSaveVideo().save(frames, "sora/clip", "mp4", 8.0, 90, "on", False, operation="extend",
                                 sources=result["result"][1])
    second = active(store(tmp_path / "output" / "sora" / again["ui"]["images"][0]["filename"]))
    assert [i["title"] for i in second["ingredients"]] == ["clip_00001_.webp"]
    stills = SoraSaveImage().save(frames[:2], "sora/still", "png", 95, "off", False)
    assert [e["filename"] for e in stills["ui"]["images"]] == ["still_00001_.png", "still_00002_.png"]
    assert stills["result"][1] == "sora/still_00001_.png [output]\nsora/still_00002_.png [output]"
    assert provenance.read_manifest(tmp_path / "output" / "sora" / "still_00001_.png") is None


def test_strict_save_nodes_refuse_the_workflow_when_it_is_queued():
    from nodes.save import SoraSaveImage, SoraSaveVideo

    assert SoraSaveVideo.VALIDATE_INPUTS("mp4", "strict") is True
    assert "webm" in SoraSaveVideo.VALIDATE_INPUTS("webm", "strict")
    assert SoraSaveVideo.VALIDATE_INPUTS("webm", "on") is True  # saved unsigned, with a warning
    assert "not found" in SoraSaveImage.VALIDATE_INPUTS("png", "on", "extend", "x.png")
    assert "no input files" in SoraSaveImage.VALIDATE_INPUTS("png", "on", "generate", "x.png")
    assert "not allowed" in SoraSaveImage.VALIDATE_INPUTS("tiff", "on")
