"""ComfyUI nodes for sora-nodes. The only package that imports ComfyUI (through `host`, and only
when running inside it). Imports are relative: ComfyUI has its own top-level module `nodes`."""

from . import host
from .latent import SoraPatchifyGrid, SoraTrimFrames, SoraVAEDecode, SoraVAEEncode
from .loader import SoraDiffusionModelLoader, SoraModelLoader, SoraTextEncoderLoader, SoraVAELoader
from .long import SoraLongVideo
from .sampler import SoraDiTSampler
from .save import SoraSaveImage, SoraSaveVideo
from .temporal import SoraAnimateImage, SoraConnect, SoraExtend, SoraLoop, SoraSDEditNoise
from .text import SoraApplyLayout, SoraRecaption, SoraTextEncode

host.register_model_folder()

NODE_CLASS_MAPPINGS = {
    "SoraModelLoader": SoraModelLoader,
    "SoraDiffusionModelLoader": SoraDiffusionModelLoader,
    "SoraVAELoader": SoraVAELoader,
    "SoraTextEncoderLoader": SoraTextEncoderLoader,
    "SoraTextEncode": SoraTextEncode,
    "SoraRecaption": SoraRecaption,
    "SoraApplyLayout": SoraApplyLayout,
    "SoraPatchifyGrid": SoraPatchifyGrid,
    "SoraDiTSampler": SoraDiTSampler,
    "SoraVAEEncode": SoraVAEEncode,
    "SoraVAEDecode": SoraVAEDecode,
    "SoraAnimateImage": SoraAnimateImage,
    "SoraExtend": SoraExtend,
    "SoraLoop": SoraLoop,
    "SoraConnect": SoraConnect,
    "SoraLongVideo": SoraLongVideo,
    "SoraSDEditNoise": SoraSDEditNoise,
    "SoraTrimFrames": SoraTrimFrames,
    "SoraSaveVideo": SoraSaveVideo,
    "SoraSaveImage": SoraSaveImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SoraModelLoader": "Sora Model Loader",
    "SoraDiffusionModelLoader": "Sora Load Diffusion Model",
    "SoraVAELoader": "Sora Load VAE 3D",
    "SoraTextEncoderLoader": "Sora Load Text Encoder",
    "SoraTextEncode": "Sora Text Encode",
    "SoraRecaption": "Sora Recaption Prompt",
    "SoraApplyLayout": "Sora Apply Layout",
    "SoraPatchifyGrid": "Sora Patchify Grid (Empty Video)",
    "SoraDiTSampler": "Sora DiT Sampler",
    "SoraVAEEncode": "Sora VAE Encode (Video)",
    "SoraVAEDecode": "Sora VAE Decode (Video)",
    "SoraAnimateImage": "Sora Animate Image",
    "SoraExtend": "Sora Extend Video",
    "SoraLoop": "Sora Seamless Loop",
    "SoraConnect": "Sora Connect Clips",
    "SoraLongVideo": "Sora Long Video (chained extension)",
    "SoraSDEditNoise": "Sora SDEdit Noise",
    "SoraTrimFrames": "Sora Trim Frames to 1+4k",
    "SoraSaveVideo": "Sora Save Video (Content Credentials)",
    "SoraSaveImage": "Sora Save Image (Content Credentials)",
}
