"""What the package imports is what it declares: requirements.txt and pyproject.toml list every
third-party module that sora_core and the nodes import (a missing one fails only after sampling)."""

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = {"PIL": "pillow", "cv2": "opencv-python", "c2pa": "c2pa-python"}  # import name -> package
PROVIDED = {"torch", "comfy", "folder_paths", "latent_preview", "sora_core"}  # by ComfyUI or this repository
OPTIONAL = {"xformers"}  # imported inside try/except, used only when present


def imported_modules() -> set[str]:
    names = set()
    for path in [*REPO.glob("sora_core/**/*.py"), *REPO.glob("nodes/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - PROVIDED - OPTIONAL


def declared(lines) -> set[str]:
    return {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in lines
            if line.strip() and not line.startswith("#")}


def test_every_imported_package_is_declared_in_both_files():
    needed = {DISTRIBUTION.get(m, m).lower() for m in imported_modules()}
    assert "pillow" in needed  # io.py writes gif / webp / png through it
    requirements = declared((REPO / "requirements.txt").read_text().splitlines())
    pyproject = declared(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert needed <= requirements, f"missing from requirements.txt: {sorted(needed - requirements)}"
    assert requirements == pyproject
