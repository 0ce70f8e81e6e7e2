"""Shared fixtures: tiny random-weight models (the `micro` preset) for fast, real computations."""

from __future__ import annotations

import pytest
import torch

from sora_core.checkpoint import SoraModel, save_checkpoint
from sora_core.config import preset


def perturbed(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Zero-initialised layers make a fresh DiT output exactly 0; jitter them so tests see real signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session", autouse=True)
def private_config(tmp_path_factory):
    """Tests never touch the user's config folder, where the local C2PA signer is made, nor their certificate."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    patch.delenv("SORA_C2PA_CERT", raising=False)
    patch.delenv("SORA_C2PA_KEY", raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: tiny models and convs on a shared 2-core machine, where
    thread hand-offs cost more than they save. Modules opt in with `pytestmark`."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def micro_model() -> SoraModel:
    torch.manual_seed(0)
    model = SoraModel(preset("micro")).eval()
    perturbed(model.dit)
    return model


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory, micro_model) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "micro.safetensors"
    save_checkpoint(micro_model, path)
    return str(path)
