"""Cache keys that include precision and engine: features made at int8 or bf16 are never reused by an fp32 run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from clipdemo.data import Split
from clipdemo.features import (
    Backbone,
    encode_split,
    zero_shot_classifier,
)
from tests.colour_images import colour_image

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
