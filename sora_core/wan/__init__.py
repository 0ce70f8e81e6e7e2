"""The Wan 2.1 / 2.2 open models, run natively: diffusion transformer, VAEs and umt5 text encoder.

`files` is the one place that reads their files (identify, then load without copies).
"""
