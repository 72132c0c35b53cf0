"""How models and datasets are named to visitors: Hub ids as they are, local folders by their last component only
(a server's paths stay on the server)."""

from __future__ import annotations

from pathlib import Path


def looks_like_path(spec: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a local path."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or "\\" in spec


def is_local(spec: str) -> bool:
    """Meant as a path, or naming a folder that exists here (a relative ``models/my-clip``)."""
    return looks_like_path(spec) or Path(spec).expanduser().exists()


def model_name(spec: str) -> str:
    """``openai/clip-vit-base-patch32`` as is; ``/srv/models/my-clip`` -> ``local model 'my-clip'``."""
    return f"local model '{Path(spec).expanduser().name}'" if is_local(spec) else spec


def source_name(source: str) -> str:
    """A dataset source as cards record it: ``folder:/data/pets`` -> ``folder: pets``; Hub and built-in ones as is."""
    kind, _, rest = str(source).partition(":")
    return f"{kind}: {Path(rest).name}" if rest.startswith(("/", "~", ".")) else str(source)


def hide_path(text: str, spec: str, name: str) -> str:
    """``text`` (an error message, a description) with a local model's path, as configured and resolved, replaced
    by ``name``."""
    if not is_local(spec):  # a Hub id: nothing to hide
        return text
    for path in sorted({spec, str(Path(spec).expanduser().resolve())}, key=len, reverse=True):
        text = text.replace(path, name)
    return text
