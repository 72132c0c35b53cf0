"""Which model is this? Identities of model folders from their files, cheap even for a 600 MB checkpoint.

A fingerprint hashes the small files (config, processor, tokenizer JSON) in full and the weight files by size
and three sampled 64 KiB chunks: path-independent (a copied folder keeps its caches), and it changes when the
weights or the preprocessing config change. It keys the feature caches, the ONNX export cache and head
checkpoints' backbone check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CONFIG_SUFFIXES = (".json", ".txt")  # small files hashed in full (config, processor, tokenizer)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")  # large files: size + sampled chunks
_CHUNK = 64 * 1024


def backbone_folder(spec: str) -> Path | None:
    """The folder holding ``spec``'s files: the folder itself, or a Hub id's snapshot in the local HF cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def folder_fingerprint(folder: Path) -> str:
    """A digest of a model folder's contents, cheap even for a 600 MB checkpoint (see the module docstring)."""
    h = hashlib.blake2b(digest_size=12)
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        if f.suffix in _CONFIG_SUFFIXES:
            h.update(f"{f.name}\0".encode() + f.read_bytes())
        elif f.suffix in _WEIGHT_SUFFIXES:
            size = f.stat().st_size
            h.update(f"{f.name}\0{size}\0".encode())
            with open(f, "rb") as fh:
                for offset in (0, max(0, size // 2 - _CHUNK // 2), max(0, size - _CHUNK)):
                    fh.seek(offset)
                    h.update(fh.read(_CHUNK))
    return h.hexdigest()


def backbone_fingerprint(spec: str) -> str | None:
    """``folder_fingerprint`` of the files behind ``spec``, or None when they are not on this machine."""
    folder = backbone_folder(spec)
    return folder_fingerprint(folder) if folder is not None else None


def canonical_spec(spec: str) -> str:
    """Folders as absolute paths (a card must not depend on the working directory); Hub ids unchanged."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec
