"""The Wan 2.1 / 2.2 open models, read from the single files artists keep for ComfyUI."""
