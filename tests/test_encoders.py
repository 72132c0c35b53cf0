"""The encoder interface: a HF CLIP folder embeds as transformers does; missing, broken, pickle-only and unreachable
models are refused in one sentence; one load under concurrency; the precision choice; the shipped checkpoint in
bf16 agrees with fp32; text batches stay within a token budget."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from clipdemo import devices, encoders, hub_access
from clipdemo.encoders import load_encoder
from clipdemo.errors import ModelUnavailable
from clipdemo.testing import make_clip_folder


def test_hf_folder_matches_transformers(tiny_clip):
    enc = load_encoder(str(tiny_clip))
    images = [Image.effect_noise((64, 48), 40).convert("RGB"), Image.new("RGB", (30, 50), "orange")]
    # longer than the 77-token context first: encode_texts batches by length and must give rows back in order
    texts = ["Flabébé ♀ " * 30, "a photo of a cat", "dog", "a photo of a red sports car"]
    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        ref_img = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        ref_txt = model.get_text_features(
            **processor(text=texts, return_tensors="pt", padding=True, truncation=True, max_length=77)
        ).pooler_output
    assert torch.allclose(enc.encode_images(images), torch.nn.functional.normalize(ref_img, dim=-1), atol=1e-5)
    assert torch.allclose(enc.encode_texts(texts), torch.nn.functional.normalize(ref_txt, dim=-1), atol=1e-5)
    assert torch.allclose(enc.encode_texts(texts, max_tokens=40), enc.encode_texts(texts), atol=1e-6)
    assert enc.encode_texts([]).shape == (0, model.config.projection_dim)
    assert enc.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert "cpu" in enc.describe()


def test_unreachable_hub_model_fails_fast_with_one_sentence(monkeypatch):
    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: False)
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as e:
        load_encoder("someone/not-cached-clip")
    assert time.monotonic() - start < 3
    msg = str(e.value)
    assert "someone/not-cached-clip" in msg and "CLIPDEMO_MODEL" in msg and "HF cache" in msg and "\n" not in msg


def hf_cache_with(model: Path, repo_id: str, cache: Path) -> Path:
    """``cache`` laid out as huggingface_hub leaves it after downloading ``repo_id`` (a snapshot named by its commit,
    ``refs/main`` pointing at it), holding ``model``'s files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_a_hub_id_in_the_hf_cache_answers_offline_as_its_folder_does(tiny_clip, tmp_path):
    """The way a Space or a laptop runs after the first download: the Hub id's files come from its snapshot in the
    HF cache, offline, first to export it, then with the cached export; the answers are its folder's."""
    image = tmp_path / "a.png"
    Image.effect_noise((64, 48), 40).convert("RGB").save(image)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hf_cache_with(tiny_clip, "acme/tiny-clip", tmp_path / "hub")),
        "HF_HUB_OFFLINE": "1",
        "CLIPDEMO_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }

    def scores(model: str) -> list:
        command = [sys.executable, "-m", "clipdemo", "zero-shot", "--model", model, "--labels", "cat,dog", str(image)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return [{p["label"]: p["score"] for p in row["predictions"]} for row in json.loads(out.stdout.splitlines()[-1])]

    exported = scores("acme/tiny-clip")  # transformers loads it from the cache, and it is exported
    assert scores("acme/tiny-clip") == exported  # the cached export, without transformers
    assert scores(str(tiny_clip)) == [pytest.approx(row, abs=2e-6) for row in exported]
    assert len(list((tmp_path / "checkpoints" / ".cache" / "onnx").glob("hf-clip-image-*"))) == 1  # same weights


def test_an_old_configs_text_config_dict_sets_the_context_as_transformers_reads_it(tmp_path):
    """Configs saved by transformers 4.1x carry ``text_config_dict`` beside ``text_config``, and the former wins:
    a model with a 20-token context whose ``text_config`` still says 77 embeds a long label without overflowing."""
    folder = make_clip_folder(tmp_path / "old", "tiny", context=20)
    config = json.loads((folder / "config.json").read_text())
    config["text_config_dict"] = config["text_config"]
    config["text_config"] = {**config["text_config"], "max_position_embeddings": 77}
    (folder / "config.json").write_text(json.dumps(config))
    encoder = load_encoder(str(folder))
    assert encoder.context_length == CLIPModel.from_pretrained(folder).config.text_config.max_position_embeddings == 20
    assert encoder.encode_texts(["a photo of a very long label " * 10]).shape[0] == 1


def test_real_probe_answers_within_seconds():
    start = time.monotonic()
    hub_access.hub_reachable(timeout=2.0)
    assert time.monotonic() - start < 5


def test_missing_and_broken_folders(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_encoder(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match=str(tmp_path)):
        load_encoder(str(tmp_path))


def test_a_folder_with_only_pickled_weights_is_refused(tiny_clip, tmp_path):
    """Safetensors only: pytorch_model.bin would be unpickled by a plain from_pretrained; we refuse it."""
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_clip, folder)
    torch.save(CLIPModel.from_pretrained(tiny_clip).state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        load_encoder(str(folder))


def test_loaded_once_under_concurrency(tiny_clip, monkeypatch):
    calls = []
    real = encoders._build

    def counting(*args):
        calls.append(args)
        time.sleep(0.2)
        return real(*args)

    monkeypatch.setattr(encoders, "_build", counting)
    spec = str(tiny_clip) + "/"  # a key no other test has loaded
    got = []
    threads = [threading.Thread(target=lambda: got.append(load_encoder(spec))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and len({id(e) for e in got}) == 1


def test_precision_choice(monkeypatch, caplog):
    cpu = torch.device("cpu")
    for fast in (False, True):  # fp32 on every CPU: bf16 changed top-1 on our test set
        monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast)
        assert devices.pick_precision(cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.pick_precision(torch.device("cuda", 0)) == "bf16"
    monkeypatch.setenv("CLIPDEMO_PRECISION", "bf16")
    assert devices.pick_precision(cpu) == "bf16"
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert devices.pick_precision(cpu) == "bf16" and "far slower" in caplog.text
    with pytest.raises(ValueError):
        devices.pick_precision(cpu, "fp8")


def test_shipped_checkpoint_in_bf16_mostly_agrees_with_fp32():
    """What the precision choice rests on: bf16 is close to fp32 but not identical on our test set."""
    from clipdemo.data.sources import load_source
    from clipdemo.features import encode_split
    from clipdemo.scoring import Rule
    from clipdemo.zeroshot import build_classifier

    dataset = load_source("shapes")
    test = dataset.splits["test"]
    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "scratch" / "shapes-v1"
    scores = {}
    for precision in ("fp32", "bf16"):
        encoder = encoders.load_encoder(str(shipped), precision=precision)
        assert encoder.precision == precision
        features = encode_split(encoder, test, progress=lambda event: None).features
        classes = build_classifier(encoder, dataset.class_names, encoder.templates)
        scores[precision] = Rule.of(encoder).logits(features, classes)
    assert not torch.equal(scores["fp32"], scores["bf16"])  # bf16 really ran
    agree = (scores["fp32"].argmax(1) == scores["bf16"].argmax(1)).float().mean().item()
    assert agree >= 0.95


def test_text_batches_hold_at_most_max_tokens_padded():
    # rows sorted by length; a batch's padded size is rows x its longest; an over-long prompt goes alone
    assert list(encoders._token_batches([0, 1, 2, 3], [2, 2, 3, 10], max_tokens=6)) == [[0, 1], [2], [3]]
    assert list(encoders._token_batches([], [], max_tokens=6)) == []


def test_our_tokenizer_gives_transformers_ids_with_and_without_tokenizer_json(tiny_clip, tmp_path):
    """The ``tokenizers`` library on tokenizer.json (no transformers import) cuts and pads as CLIPTokenizer does;
    a folder without tokenizer.json (vocab.json and merges.txt only) gets the same ids through transformers."""
    import shutil

    from transformers import CLIPTokenizer

    from clipdemo.hf_files import TextTokenizer

    texts = ["Flabébé ♀ " * 30, "a photo of a cat", "  DOG  ", "ünïcödé, punctuation!? and 123", ""]
    reference = CLIPTokenizer.from_pretrained(tiny_clip)
    cut = reference(texts, truncation=True, max_length=77)["input_ids"]
    padded = reference.pad({"input_ids": cut}, return_tensors="np")
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_clip, legacy)
    (legacy / "tokenizer.json").unlink()
    for folder in (tiny_clip, legacy):
        ours = TextTokenizer.load(str(folder), str(folder), 77, {"local_files_only": True})
        assert ours.ids(texts) == cut and max(map(len, cut)) == 77
        assert ours.ids(texts, truncate=False) == reference(texts)["input_ids"]
        ids, mask = ours.pad(cut)
        assert (ids == padded["input_ids"]).all() and (mask == padded["attention_mask"]).all()
    assert load_encoder(str(tiny_clip)).token_lengths(texts[:2]) == [len(x) for x in reference(texts[:2])["input_ids"]]
