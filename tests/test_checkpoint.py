"""Checkpoints: safetensors with the config inside; pickles refused unopened; sizes checked against
the header before anything is built; clear mismatch errors."""

import json
import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from sora_core import checkpoint
from sora_core.checkpoint import SoraModel, load_checkpoint, read_metadata, save_checkpoint
from sora_core.config import SoraConfig, preset


def test_a_saved_model_loads_back_with_identical_weights_and_outputs(tmp_path, micro_model):
    path = tmp_path / "m.safetensors"
    save_checkpoint(micro_model, path)
    loaded = load_checkpoint(path)
    for (k, a), (_, b) in zip(micro_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 4, 2, 4, 4)
    t = torch.rand(1, 2)
    emb, mask = loaded.text.encode(["a red circle"])
    assert torch.equal(micro_model.dit(x, t, emb, mask), loaded.dit(x, t, emb, mask))
    assert loaded.config == micro_model.config


def test_the_config_travels_in_the_metadata(tmp_path, micro_model):
    path = tmp_path / "m.safetensors"
    save_checkpoint(micro_model, path, extra={"note": "x"})
    meta = read_metadata(path)
    assert SoraConfig.from_json(meta["config"]) == micro_model.config
    assert json.loads(meta["extra"]) == {"note": "x"}


def test_half_precision_files_load_as_float32(tmp_path, micro_model):
    path = tmp_path / "m16.safetensors"
    save_checkpoint(micro_model, path, dtype=torch.float16)
    assert next(load_checkpoint(path).parameters()).dtype == torch.float32


def test_a_subset_of_parts_can_be_saved_and_loaded(tmp_path):
    vae_only = SoraModel(preset("micro"), parts=("vae",))
    path = tmp_path / "vae.safetensors"
    save_checkpoint(vae_only, path)
    assert load_checkpoint(path).parts == ("vae",)  # by default: whatever the file holds
    with pytest.raises(ValueError, match=r"it has no \['dit', 'text'\]"):
        load_checkpoint(path, parts=("vae", "text", "dit"))


def test_pickle_files_are_refused_without_being_opened(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for suffix in (".ckpt", ".pt", ".pth", ".bin"):
        path = tmp_path / f"evil{suffix}"
        path.write_bytes(pickle.dumps(Exploit()))
        with pytest.raises(ValueError, match="refusing to load .*pickle"):
            load_checkpoint(path)
    assert not marker.exists()


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path, micro_model):
    path = tmp_path / "m.safetensors"
    wider = SoraModel(replace(preset("micro"), dit=replace(preset("micro").dit, dim=60)))
    save_checkpoint(wider, path)
    meta = read_metadata(path)
    # same weights, but a config that claims the narrower DiT
    tensors = {k: v for k, v in wider.state_dict().items()}
    save_file(tensors, path, metadata={**meta, "config": micro_model.config.to_json()})
    with pytest.raises(ValueError, match=r"does not match its config: .*dit\..*file has \(.*60.*\), config expects"):
        load_checkpoint(path)


def test_metadata_that_lies_about_sizes_is_refused_before_any_weight_is_allocated(tmp_path, micro_model, monkeypatch):
    path = tmp_path / "liar.safetensors"
    save_checkpoint(micro_model, path)
    meta = read_metadata(path)
    huge = replace(micro_model.config, dit=replace(micro_model.config.dit, dim=65536))  # a 17 GB DiT, if built
    save_file(dict(micro_model.state_dict()), path, metadata={**meta, "config": huge.to_json()})
    built = []

    class Recording(SoraModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append({p.device.type for p in self.parameters()})

    monkeypatch.setattr(checkpoint, "SoraModel", Recording)
    with pytest.raises(ValueError, match=r"does not match its config: .*dit.x_embed.weight: file has \(48, 16\), "
                                         r"config expects \(65536, 16\)"):
        load_checkpoint(path)
    assert built == [{"meta"}]


def test_a_zero_latent_std_is_refused_in_the_config_and_in_the_weights(tmp_path, micro_model):
    with pytest.raises(ValueError, match=r"VAEConfig.latent_std=\[1.0, 0.0, 1.0, 1.0\] is not allowed: every entry must be > 0"):
        SoraModel(replace(preset("micro"), vae=replace(preset("micro").vae, latent_std=(1.0, 0.0, 1.0, 1.0))))
    path = tmp_path / "m.safetensors"
    save_checkpoint(micro_model, path)
    tensors = dict(micro_model.state_dict())
    tensors["vae.latent_std"] = torch.zeros_like(tensors["vae.latent_std"])
    save_file(tensors, path, metadata=read_metadata(path))
    with pytest.raises(ValueError, match="has a zero or negative vae.latent_std"):
        load_checkpoint(path)


def test_a_safetensors_file_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a sora-nodes checkpoint"):
        load_checkpoint(path)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_saving_is_atomic_and_leaves_no_temp_files(tmp_path, micro_model):
    path = tmp_path / "m.safetensors"
    save_checkpoint(micro_model, path)
    with pytest.raises(ValueError):
        save_checkpoint(micro_model, tmp_path / "bad.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
