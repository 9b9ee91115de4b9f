"""What the edgebench image is built from: the checkout's build context, the requirements it installs and the tag
that names exactly this source (harness.run.docker_engine builds it only when that tag is missing)."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements() -> list[str]:
    """What the image installs with dependencies: pyproject's dependencies and its build backend."""
    import tomllib  # Python 3.11+, which the offline build needs anyway (IMAGE_PYTHON)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [*project["project"]["dependencies"], *project["build-system"]["requires"]]


def context_files(root: Path = ROOT) -> list[Path]:
    """What the image is built from: the Dockerfile, .dockerignore and the paths .dockerignore lets in
    (its `!path` lines; it excludes everything else), without bytecode."""
    included = [
        line[1:].strip() for line in (root / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    files = [root / "Dockerfile", root / ".dockerignore"]
    for name in included:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"]


def source_tag(name: str, root: Path = ROOT) -> str:
    """`name:<hash>` of the build context's paths and contents: the tag exists exactly when this source was built."""
    digest = hashlib.sha256()
    for path in context_files(root):
        digest.update(f"{path.relative_to(root)}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return f"{name}:{digest.hexdigest()[:12]}"
