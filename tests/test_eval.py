"""eval's report (sora_core.eval.run) on a tiny random-weight model."""

from __future__ import annotations

import json
import math

from sora_core.eval.run import heldout, vae_psnr
from sora_core.pipeline import Pipeline


def test_vae_psnr_is_null_without_videos_and_a_number_with_them(micro_checkpoint):
    pipe = Pipeline.load(micro_checkpoint)
    assert vae_psnr(pipe, []) is None  # no real clips installed: the report says null, never NaN
    assert json.dumps({"vae_psnr_real": vae_psnr(pipe, [])}) == '{"vae_psnr_real": null}'
    value = vae_psnr(pipe, [heldout(1, 32, 32, 9, 3)[0]["video"]])
    assert isinstance(value, float) and math.isfinite(value) and value > 0
