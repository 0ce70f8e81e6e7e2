"""sora_core: the Sora-report machinery (3D VAE, spacetime patches, DiT, flow matching).

Self-contained: depends on torch, safetensors, einops, numpy and opencv only, never on ComfyUI.
"""

__version__ = "0.1.0"
