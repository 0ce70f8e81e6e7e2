"""sora_core: the Sora-report machinery (3D VAE, spacetime patches, DiT, flow matching).

Self-contained: depends on torch, safetensors, einops, numpy and opencv (plus c2pa-python and
cryptography for provenance, which degrades to a warning without them), never on ComfyUI.
"""

__version__ = "0.1.0"
