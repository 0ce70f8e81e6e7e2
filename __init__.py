"""sora-nodes: ComfyUI custom nodes for Sora-style video generation ("Video generation models as
world simulators"), with a small model trained for them."""

import os
import sys

# The nodes import the engine as `sora_core`, which lives next to this file. Appended, not
# prepended, so nothing here can shadow ComfyUI's own top-level modules (it has a `nodes` too).
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.append(_here)

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./web"  # shows the text Sora nodes report inside the node

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
