"""Every environment variable clipdemo reads, read here and nowhere else (secrets included: never from files).

``Settings.from_env()`` is what the app and the CLI serve with; the small functions below are the settings
that library code needs on its own (a model's precision, an image's caps), read when they are used so a test
or a process can change them. A value clipdemo can't use is a ``ConfigError``: one sentence naming the
variable, exit 2 in the CLI. (torchrun's own ``WORLD_SIZE`` / ``LOCAL_RANK`` are its protocol, read by
``clipdemo.distributed``.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipdemo.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
MODEL_ENV = "CLIPDEMO_MODEL"
PRECISION_ENV = "CLIPDEMO_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # int8: the ONNX engine only (fp32 elsewhere)
ENGINE_ENV = "CLIPDEMO_ENGINE"
ENGINES = ("auto", "torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")  # what --device and a training option accept
CACHE_MAX_GB_ENV, DEFAULT_CACHE_MAX_GB = "CLIPDEMO_CACHE_MAX_GB", 5.0  # fits a Space's smallest persistent storage
HUB_REPO_ENV, TOKEN_ENV = "CLIPDEMO_HUB_REPO", "HF_TOKEN"
MAX_PIXELS_ENV, MAX_BYTES_ENV = "CLIPDEMO_MAX_PIXELS", "CLIPDEMO_MAX_BYTES"
MCP_ENV = "CLIPDEMO_MCP"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
DEFAULT_MAX_PIXELS, DEFAULT_MAX_BYTES = 40_000_000, 20 * 1024 * 1024


def default_model() -> str:
    """``CLIPDEMO_MODEL``: the zero-shot model (Hub id, HF folder or scratch checkpoint)."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


def precision() -> str:
    """``CLIPDEMO_PRECISION``: auto, fp32 or bf16 (``clipdemo.devices.pick_precision`` resolves auto)."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise ConfigError(f"{PRECISION_ENV} must be one of {', '.join(PRECISIONS)}, not {value[:40]!r}.")
    return value


def engine() -> str:
    """``CLIPDEMO_ENGINE``: auto, torch or onnx (``clipdemo.onnx_engine.pick_engine`` resolves auto)."""
    value = os.environ.get(ENGINE_ENV, "").strip().lower() or "auto"
    if value not in ENGINES:
        raise ConfigError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, not {value[:40]!r}.")
    return value


def mcp() -> bool:
    """``CLIPDEMO_MCP``: serve the app's tools over MCP at ``/gradio_api/mcp/`` too (on unless 0/false/no/off)."""
    value = os.environ.get(MCP_ENV, "").strip().lower()
    if not value:
        return True
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(f"{MCP_ENV} must be 1 or 0 (or true/false, yes/no, on/off), not {value[:40]!r}.")
    return value in TRUE_WORDS


def image_caps() -> tuple[int, int]:
    """``(max pixels, max bytes)`` of an image we agree to decode (``CLIPDEMO_MAX_PIXELS``, ``CLIPDEMO_MAX_BYTES``)."""
    return _positive_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS), _positive_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES)


def cache_max_bytes() -> int:
    """``CLIPDEMO_CACHE_MAX_GB``: what the caches under the checkpoint dir may hold, in GB (10^9 bytes), ONNX
    exports and feature and text-embedding caches together (``clipdemo.caches``); 0 keeps only what is in use."""
    raw = os.environ.get(CACHE_MAX_GB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_CACHE_MAX_GB * 1e9)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ConfigError(
            f"{CACHE_MAX_GB_ENV} must be a number of gigabytes, 0 or more (e.g. 5 or 0.5), not {raw[:40]!r}."
        )
    return int(value * 1e9)


def hub_repo() -> str | None:
    """``CLIPDEMO_HUB_REPO``: the Hub model repo promoted checkpoints are pushed to and pulled from."""
    return os.environ.get(HUB_REPO_ENV, "").strip() or None


def hf_token() -> str | None:
    """``HF_TOKEN``: the Hub token (a Space secret); never logged."""
    return os.environ.get(TOKEN_ENV) or None


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE``: huggingface_hub's own switch, honoured before we try the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def space_with_oauth(env=None) -> bool:
    """Running on a Hugging Face Space with OAuth (``hf_oauth: true``): ``SYSTEM``, ``SPACE_ID`` and
    ``OAUTH_CLIENT_SECRET`` are set by Spaces itself (``env``: another mapping, for tests)."""
    env = os.environ if env is None else env
    return env.get("SYSTEM") == "spaces" and bool(env.get("SPACE_ID")) and bool(env.get("OAUTH_CLIENT_SECRET"))


def child_environment() -> dict[str, str]:
    """The environment for a clipdemo child process: this one, with the folder holding ``clipdemo`` first on
    ``PYTHONPATH`` (importable whether it is installed or run from a checkout)."""
    package = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package, os.environ.get("PYTHONPATH")]))}


def check_environment() -> None:
    """Read every variable that must parse, so a bad value is one sentence when a command or the app starts,
    not an error minutes into a run."""
    precision()
    cache_max_bytes()
    engine()
    image_caps()
    mcp()


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name} must be a positive whole number, not {os.environ[name][:40]!r}.")
    return value


@dataclass
class Settings:
    model: str = field(default_factory=default_model)  # CLIPDEMO_MODEL: Hub id, HF folder or scratch checkpoint
    extra_models: list[str] = field(default_factory=list)  # CLIPDEMO_EXTRA_MODELS: more choices for the zero-shot tab
    checkpoint_dir: Path = REPO_ROOT / "checkpoints"  # CLIPDEMO_CHECKPOINT_DIR (on Spaces: /data/checkpoints)
    data_root: Path | None = None  # CLIPDEMO_DATA_ROOT: the only folders the admin tab may train on
    admin_token: str | None = field(default=None, repr=False)  # CLIPDEMO_ADMIN_TOKEN: enables the admin tab
    admin_users: tuple[str, ...] = ()  # CLIPDEMO_ADMIN_USERS: HF accounts let in by signing in (on a Space only)
    max_file_size: str = "10mb"  # CLIPDEMO_MAX_FILE_SIZE: Gradio's upload limit
    search_root: Path | None = None  # CLIPDEMO_SEARCH_ROOT: a dataset folder every visitor may search (read-only)
    mcp: bool = True  # CLIPDEMO_MCP: also serve the tools over MCP (/gradio_api/mcp/); 0 turns it off

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        values = dict(
            model=default_model(),
            extra_models=[m.strip() for m in env.get("CLIPDEMO_EXTRA_MODELS", "").split(",") if m.strip()],
            checkpoint_dir=Path(env.get("CLIPDEMO_CHECKPOINT_DIR") or REPO_ROOT / "checkpoints"),
            data_root=Path(env["CLIPDEMO_DATA_ROOT"]) if env.get("CLIPDEMO_DATA_ROOT") else None,
            admin_token=env.get("CLIPDEMO_ADMIN_TOKEN") or None,
            admin_users=tuple(u.strip() for u in env.get("CLIPDEMO_ADMIN_USERS", "").split(",") if u.strip()),
            max_file_size=env.get("CLIPDEMO_MAX_FILE_SIZE", "10mb"),
            search_root=Path(env["CLIPDEMO_SEARCH_ROOT"]) if env.get("CLIPDEMO_SEARCH_ROOT") else None,
            mcp=mcp(),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def cache_dir(self) -> Path:
        """Feature, text-embedding and decoded-image caches: hidden inside the checkpoint dir (not a family)."""
        return Path(self.checkpoint_dir) / ".cache"
