"""The caches' budget (clipdemo/caches.py): least recently used evicted first, never an entry in use, never a file
clipdemo did not write; cache keys that include precision and engine; ``cache list`` and ``cache prune``."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from clipdemo import caches
from clipdemo.cli import main
from clipdemo.data import Split
from clipdemo.features import (
    Backbone,
    EncodedSplit,
    encode_split,
    feature_cache_path,
    load_features,
    save_features,
    zero_shot_classifier,
)
from clipdemo.testing import colour_image

ROOT = Path(__file__).resolve().parent.parent


class Double:
    """A stand-in encoder: the embedding is the image's top-left pixel; counts the images it encodes."""

    name, logit_scale, context_length = "double", 10.0, 77

    def __init__(self, precision: str = "fp32", engine: str = "torch"):
        self.precision, self.engine, self.images = precision, engine, 0

    def encode_images(self, images):
        self.images += len(images)
        return torch.nn.functional.normalize(torch.stack([torch.tensor(im.getpixel((0, 0))) + 1.0 for im in images]))

    def encode_texts(self, texts):
        return torch.nn.functional.normalize(torch.tensor([[len(t), 1.0, 2.0] for t in texts]))


def split(n: int = 4) -> Split:
    return Split([colour_image(name, i) for i, name in zip(range(n), ["apple", "sky"] * n)], [i % 2 for i in range(n)])


def entry(cache: Path, name: str, rows: int, age: float) -> Path:
    """A feature cache entry of ``rows`` rows, last used ``age`` seconds ago (nothing holds it)."""
    encoded = EncodedSplit(torch.rand(rows, 64), torch.zeros(rows, dtype=torch.long), 0, torch.arange(rows))
    path = save_features(feature_cache_path(Double(), (name,), cache), encoded, rows)
    del encoded
    gc.collect()
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def budget_env(monkeypatch, nbytes: int) -> None:
    monkeypatch.setenv("CLIPDEMO_CACHE_MAX_GB", repr(nbytes / 1e9))


def test_the_budget_evicts_least_recently_used_first_and_never_an_entry_in_use(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CACHE_MAX_GB", "1")
    oldest, old, recent, newest = (entry(tmp_path, n, 100, age) for n, age in zip("abcd", (400, 300, 200, 100)))
    size = oldest.stat().st_size
    held = load_features(oldest, Split([None] * 100, [0] * 100))  # in use while `held` lives; and used now
    assert held is not None and caches.in_use(oldest)
    os.utime(oldest, (time.time() - 500,) * 2)  # the least recently used of all, yet in use
    assert load_features(recent, Split([None] * 100, [0] * 100)) is not None  # a load stamps its use: now newest
    assert time.time() - recent.stat().st_mtime < 60
    gc.collect()
    budget_env(monkeypatch, 3 * size + size // 2)  # room for three of the five below
    fresh = entry(tmp_path, "e", 100, 0)  # a write enforces the budget
    assert oldest.exists() and fresh.exists() and recent.exists()  # in use; just written; just loaded
    assert not old.exists() and not newest.exists()  # the two least recently used not in use, oldest first
    del held
    gc.collect()
    assert not caches.in_use(oldest)
    budget_env(monkeypatch, 2 * size + size // 2)
    pruned = caches.prune(tmp_path)  # on demand: the one in use before is now the least recently used
    assert [e.path for e in pruned.removed] == [oldest] and pruned.total <= 2 * size + size // 2


def test_an_entry_held_by_another_process_is_in_use_there_too(tmp_path, monkeypatch):
    checkpoints = tmp_path / "ckpts"
    cache = checkpoints / ".cache"
    kept, loose = entry(cache, "kept", 10, 100), entry(cache, "loose", 10, 50)
    held = load_features(kept, Split([None] * 10, [0] * 10))
    env = {**os.environ, "CLIPDEMO_CHECKPOINT_DIR": str(checkpoints)}
    run = subprocess.run(
        [sys.executable, "-m", "clipdemo", "cache", "prune", "--all"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert run.returncode == 0, run.stderr
    listed = json.loads(run.stdout.strip().splitlines()[-1])
    assert [(e["kind"], e["in_use"]) for e in listed["entries"]] == [("features", True)]
    assert kept.exists() and not loose.exists() and held is not None


def test_exports_in_use_are_never_evicted(tiny_clip, tmp_path, monkeypatch):
    from clipdemo.encoders import forget_encoder, load_encoder

    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("CLIPDEMO_CACHE_MAX_GB", "0")  # nothing fits: only what is in use stays
    forget_encoder(str(tiny_clip))  # exported here, not found in another test's cache
    encoder = load_encoder(str(tiny_clip), device="cpu", engine="onnx")
    assert encoder.engine == "onnx"
    exports = [e for e in caches.entries(tmp_path / ".cache") if e.kind == caches.ONNX]
    assert sorted(e.what for e in exports) == ["hf-clip-image", "hf-clip-text"] and all(e.in_use for e in exports)
    assert caches.prune(tmp_path / ".cache", everything=True).removed == []
    encoder.encode_images([colour_image("sky", 0)])  # still runs
    forget_encoder(str(tiny_clip))
    del encoder
    gc.collect()
    removed = caches.prune(tmp_path / ".cache").removed
    assert sorted(e.what for e in removed) == ["hf-clip-image", "hf-clip-text"]
    assert not [p for p in (tmp_path / ".cache" / "onnx").iterdir() if not p.name.startswith(".")]


# --- cache keys: precision and engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("other", [Double("int8", "onnx"), Double("bf16", "torch"), Double("fp32", "onnx")])
def test_a_precision_or_engine_change_misses_the_feature_cache(tmp_path, other):
    first = Double("fp32", "torch")
    encode_split(first, split(), cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None)
    again = encode_split(other, split(), cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None)
    assert other.images == 4 and again.fresh == 4  # made anew, not read from the fp32 / PyTorch file
    same = Double("fp32", "torch")
    assert encode_split(same, split(), cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None).fresh == 0
    assert len(list(tmp_path.glob("features-*.safetensors"))) == 2
    zero_shot_classifier(first, ["a", "b"], ("{}",), tmp_path)
    zero_shot_classifier(other, ["a", "b"], ("{}",), tmp_path)  # class-text embeddings too
    assert len(list(tmp_path.glob("text-*.safetensors"))) == 2


def test_int8_features_are_not_reused_at_fp32_and_a_warm_cache_needs_no_model(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    images = split()
    int8 = Backbone(str(tiny_clip), device="cpu", precision="int8")
    assert encode_split(int8, images, cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None).fresh == 4
    assert int8.numerics == ("int8", "onnx")
    fp32 = Backbone(str(tiny_clip), device="cpu", precision="fp32")
    assert encode_split(fp32, images, cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None).fresh == 4
    warm = Backbone(str(tiny_clip), device="cpu", precision="int8")
    assert encode_split(warm, images, cache_dir=tmp_path, key_parts=("d",), progress=lambda e: None).fresh == 0
    assert not warm.loaded  # the planned numerics found the int8 file without loading the model
    metas = [safe_open(str(p), "pt").metadata()["meta"] for p in tmp_path.glob("features-*.safetensors")]
    assert sorted(json.loads(m)["precision"] for m in metas) == ["fp32", "int8"]


# --- the CLI ---------------------------------------------------------------------------------------------------


def strangers(root: Path) -> dict[Path, bytes]:
    """Files under a cache folder that clipdemo did not write, some named like its entries."""
    files = {
        root / "notes.txt": b"mine",
        root / ("features-" + "0" * 24 + ".safetensors"): b"not a safetensors file",
        root / "features-mine.safetensors": b"x" * 100,
        root / ("text-" + "1" * 24 + ".safetensors"): (2).to_bytes(8, "little") + b"{}",  # no metadata of ours
        root / "onnx" / "README": b"about my exports",
        root / "onnx" / ("hf-clip-image-" + "2" * 24) / "model.onnx": b"an export",
        root / "onnx" / ("hf-clip-image-" + "2" * 24) / "mine.txt": b"a file we never put in an export",
        root / "onnx" / "mine" / "model.onnx": b"not our name",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1, 1))  # older than anything: first in line if they were entries
    return files


def test_cache_list_and_prune_through_the_cli_touch_only_what_clipdemo_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    cache = tmp_path / "ckpts" / ".cache"
    mine = strangers(cache)
    a, b = entry(cache, "a", 50, 300), entry(cache, "b", 50, 200)
    classifier = zero_shot_classifier(Double(), ["cat", "dog"], ("a {}",), cache)  # in use while it lives
    [text] = [p for p in cache.glob("text-*.safetensors") if p not in mine]
    export = cache / "onnx" / ("scratch-text-" + "3" * 24)
    export.mkdir()
    (export / "model.onnx").write_bytes(b"g" * 1000)
    (export / "model.onnx.data").write_bytes(b"w" * 5000)
    os.utime(export, (time.time() - 100,) * 2)  # an export's last use: its folder's time

    assert main(["cache", "list", "--checkpoint-dir", str(tmp_path / "ckpts")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    listed = json.loads(out[-1])
    assert [(e["kind"], e["path"], e["in_use"]) for e in listed["entries"]] == [
        ("text", text.name, True),
        ("onnx", f"onnx/{export.name}", False),
        ("features", b.name, False),
        ("features", a.name, False),
    ]
    assert listed["entries"][1]["size"] == 6000 and listed["budget_bytes"] == 5_000_000_000
    assert listed["total_bytes"] == sum(e["size"] for e in listed["entries"]) and listed["in_use"] == 1
    assert "4 entries (1 in use)" in out[-2] and "of a 5.0 GB budget" in out[-2]
    assert out[0].split()[:4] == ["kind", "size", "last", "used"]

    budget_env(monkeypatch, listed["total_bytes"] - 1)  # one entry too many: the least recently used goes
    assert main(["cache", "prune", "--checkpoint-dir", str(tmp_path / "ckpts")]) == 0
    pruned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [e["path"] for e in pruned["removed"]] == [a.name] and not a.exists()
    assert main(["cache", "prune", "--all", "--checkpoint-dir", str(tmp_path / "ckpts")]) == 0
    pruned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(e["path"] for e in pruned["removed"]) == sorted([b.name, f"onnx/{export.name}"])
    assert [e["path"] for e in pruned["entries"]] == [text.name] and text.exists()  # in use: kept
    assert {p: p.read_bytes() for p in mine} == mine  # every file clipdemo did not write, untouched
    assert not [p for p in (cache / "onnx").iterdir() if p.name.endswith(".partial")]
    del classifier


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["cache", "list", "--checkpoint-dir", "/nonexistent/ckpts"], {}, "is not a folder"),
        (["cache", "prune"], {"CLIPDEMO_CACHE_MAX_GB": "lots"}, "CLIPDEMO_CACHE_MAX_GB must be a number"),
        (["cache", "list"], {"CLIPDEMO_CACHE_MAX_GB": "-1"}, "0 or more"),
        (["cache", "list"], {"CLIPDEMO_CACHE_MAX_GB": "nan"}, "0 or more"),
    ],
)
def test_cache_command_errors_are_one_sentence(tmp_path, monkeypatch, capsys, args, env, message):
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
