"""The Wan 2.1 / 2.2 family in sora_core: its DiT, VAEs and umt5 text encoder, read from the files artists have."""
