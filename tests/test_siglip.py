"""SigLIP behind the encoder interface, each family's scoring rule, open set, multi-label, context notices,
compare, matrix and relevancy maps: through the library, the CLI, the tab's handlers and the HTTP API."""

import json
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from clipdemo import cli, hub_access
from clipdemo.encoders import ModelUnavailable, load_encoder
from clipdemo.images import load_image
from clipdemo.relevancy import RelevancyError, relevancy
from clipdemo.serving import Served
from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import launched, make_siglip_folder
from clipdemo.ui import zeroshot_tab
from clipdemo.ui.app import build_app, launch_kwargs
from clipdemo.ui.common import user_errors
from clipdemo.zeroshot import TEMPLATE_SETS, zero_shot

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.jpg"))
SHAPES = sorted((REPO_ROOT / "examples" / "shapes").glob("*.png"))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    return make_siglip_folder(tmp_path_factory.mktemp("tiny-siglip"))


def images(n=2):
    return [Image.effect_noise((64, 48), 40 + 20 * i).convert("RGB") for i in range(n)]


def test_siglip_scores_match_transformers_sigmoid(tiny_siglip):
    """Our scores are transformers' own sigmoid(logits_per_image), text lowercased and padded to max_length."""
    from transformers import AutoModel, AutoProcessor

    encoder = load_encoder(str(tiny_siglip))
    assert (encoder.scoring, encoder.logit_scale, encoder.logit_bias) == ("sigmoid", pytest.approx(10.0), -10.0)
    labels = ["a cat", "a red car", "a dog"]
    ims = images()
    result = zero_shot(encoder, ims, ["A Cat", "a RED car", "a dog"], ("{}",))
    model, processor = AutoModel.from_pretrained(tiny_siglip), AutoProcessor.from_pretrained(tiny_siglip)
    with torch.no_grad():
        inputs = processor(text=labels, images=ims, padding="max_length", return_tensors="pt")
        reference = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits_per_image.sigmoid()
    assert torch.allclose(result.scores, reference, atol=1e-5)
    assert result.independent and not torch.allclose(result.scores.sum(-1), torch.ones(2))
    # padding matters: the same text padded only to its own length embeds differently
    short = processor.tokenizer(["a cat"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        unpadded = torch.nn.functional.normalize(model.get_text_features(input_ids=short).pooler_output, dim=-1)
    assert not torch.allclose(unpadded, encoder.encode_texts(["a cat"]), atol=1e-4)


def test_cli_siglip_gives_independent_sorted_scores_and_clip_sums_to_one(tiny_siglip, tiny_clip, capsys):
    argv = ["zero-shot", "--labels", "a cat, a dog, a red car", str(SHAPES[0]), str(SHAPES[1])]
    assert cli.main(argv + ["--model", str(tiny_siglip)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for item in out:
        scores = [p["score"] for p in item["predictions"]]
        assert len(scores) == 3 and all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
        assert item["scoring"] == "sigmoid" and item["independent"] and abs(sum(scores) - 1) > 0.5
    assert cli.main(argv + ["--model", str(tiny_clip)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for item in out:
        scores = [p["score"] for p in item["predictions"]]
        assert sum(scores) == pytest.approx(1, abs=1e-4) and scores == sorted(scores, reverse=True)
        assert item["scoring"] == "softmax" and not item["independent"]


def test_cli_open_set_compare_matrix_where_and_notices(tiny_siglip, tiny_clip, tmp_path, capsys):
    long_label = "a red car " * 12
    argv = [
        "zero-shot",
        "--model",
        str(tiny_clip),
        "--compare",
        str(tiny_siglip),
        "--open-set",
        "--labels",
        f"a cat, a dog, {long_label}",
        "--matrix",
        str(tmp_path / "m.png"),
        "--where",
        "a dog",
        "--where-dir",
        str(tmp_path / "maps"),
        str(SHAPES[0]),
        str(EXAMPLES[0]),
    ]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out[0]["compare"]["scoring"] == "sigmoid" and out[0]["compare"]["none_of_these"] is True  # native
    # CLIP's open set: "none of these" exactly where no label's cosine similarity reaches CLIP's threshold, 0.2
    labels = [label.strip() for label in argv[argv.index("--labels") + 1].split(",")]
    images = [load_image(path) for path in argv[-2:]]
    closed = zero_shot(load_encoder(str(tiny_clip)), images, labels, TEMPLATE_SETS["photo"])
    assert [item["threshold"] for item in out] == [0.2, 0.2]
    assert [item["none_of_these"] for item in out] == (closed.similarity.max(-1).values < 0.2).tolist()
    assert (tmp_path / "m.png").stat().st_size > 5_000
    assert Image.open(out[1]["relevancy"]).size[0] > 100
    # the SigLIP test model's context is 16 tokens, CLIP's 77: both say the long label was cut, and by how much
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert any("16 tokens" in n and "dropped" in n for n in notes) and any("77 tokens" in n for n in notes)


def test_an_unsupported_family_is_one_sentence(tmp_path, capsys):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "a-vit"
    ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(folder)
    with pytest.raises(ModelUnavailable, match=r"^Model 'a-vit' is a vit model; clipdemo runs CLIP and SigLIP"):
        load_encoder(str(folder))
    assert cli.main(["zero-shot", "--model", str(folder), "--labels", "a", str(SHAPES[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vit model" in err and str(tmp_path) not in err


def test_multi_label_and_open_set_rules(tiny_clip, tiny_siglip):
    clip, siglip = load_encoder(str(tiny_clip)), load_encoder(str(tiny_siglip))
    ims = images(3)
    multi = zero_shot(clip, ims, ["a", "b", "c"], ("{}",), multi_label=True, threshold=0.0)
    assert multi.independent and multi.score_name == "cosine similarity"
    assert torch.allclose(multi.scores, multi.similarity.clamp(min=0))
    assert all(all(p.score >= 0 for p in row) for row in multi.ranked())
    closed = zero_shot(clip, ims, ["a", "b", "c"], ("{}",), threshold=1.0)  # nothing reaches cosine 1
    assert closed.none_of_these() == [True] * 3
    assert zero_shot(clip, ims, ["a", "b"], ("{}",), threshold=0.0).none_of_these() == [False] * 3
    # SigLIP says "none of these" natively: a random model's sigmoid scores sit near 0, under 0.1
    assert zero_shot(siglip, ims, ["a cat", "a dog"], ("{}",), threshold=0.1).none_of_these() == [True] * 3
    with pytest.raises(ValueError, match="between 0 and 1"):
        zero_shot(clip, ims, ["a"], ("{}",), threshold=1.5)


def test_relevancy_maps_for_both_families_and_a_clear_refusal(tiny_clip, tiny_siglip):
    for encoder in (load_encoder(str(tiny_clip)), load_encoder(str(tiny_siglip))):
        image = Image.open(EXAMPLES[0]).convert("RGB")
        result = relevancy(encoder, image, ["a cat", "a dog"], TEMPLATE_SETS["photo"], "a dog")
        assert result.heat.shape == (4, 4) and result.heat.min() == 0 and result.heat.max() == pytest.approx(1)
        assert max(result.picture.size) <= 512
        with pytest.raises(RelevancyError, match="not one of the labels"):
            relevancy(encoder, image, ["a cat"], ("{}",), "a horse")
    scratch = load_encoder(str(REPO_ROOT / "checkpoints" / "scratch" / "shapes-v1"))
    with pytest.raises(RelevancyError, match="need a ViT from transformers"):
        relevancy(scratch, image, ["a"], ("{}",), "a")


@pytest.fixture
def served(tiny_clip, tiny_siglip, tmp_path):
    return Served(Settings(model=str(tiny_clip), extra_models=[str(tiny_siglip)], checkpoint_dir=tmp_path))


def test_tab_handlers_compare_matrix_where_and_progress(served):
    paths = [str(p) for p in EXAMPLES[:2]]
    label, chart, status = zeroshot_tab.zero_shot(
        served, paths, "a cat, a dog", "photo", "", 5, "default", "single", True, 0.0, "extra-1"
    )
    bars = chart["value"]
    assert (
        len({s.split(":")[0] for s in bars["series"][:4]}) == 2 and len(bars) == 5
    )  # both models' bars, 2 labels each
    assert list(bars["score (text)"])[-1] == "probability 10%"  # and SigLIP's threshold, on the sigmoid axis
    assert "Compared with" in status and "sigmoid" in status and "Per image" in status
    heatmap, table = zeroshot_tab.matrix(served, paths, "a cat, a dog", "photo", "", 5, "extra-1")
    assert heatmap["visible"] and "2: " in table["value"]
    single, _ = zeroshot_tab.matrix(served, paths[:1], "a cat", "photo", "", 5)
    assert single["visible"] is False
    maps = zeroshot_tab.where(served, paths, "a cat, a dog", "photo", "", "extra-1", "")
    assert len(maps) == 2 and "where '" in maps[0][1]
    handler = user_errors(lambda *a: zeroshot_tab.where(served, *a))
    with pytest.raises(gr.Error, match="not one of the labels"):
        handler(paths, "a cat", "photo", "", "default", "a horse")


def test_first_use_says_loading(tiny_clip, tmp_path):
    fresh = tmp_path / "fresh-clip"
    import shutil

    shutil.copytree(tiny_clip, fresh)
    served = Served(Settings(model=str(fresh), checkpoint_dir=tmp_path / "ck"))
    calls = []
    zeroshot_tab.zero_shot(served, [str(SHAPES[0])], "a, b", "photo", "", 5, progress=lambda *a, **k: calls.append(k))
    assert len(calls) == 1 and "Loading" in calls[0]["desc"]
    assert "downloads" not in calls[0]["desc"]  # a local folder is read from disk, never downloaded
    zeroshot_tab.zero_shot(served, [str(SHAPES[0])], "a, b", "photo", "", 5, progress=lambda *a, **k: calls.append(k))
    assert len(calls) == 1  # in memory now: no message


def test_offline_dropdown_names_the_model_that_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: False)
    served = Served(Settings(model="openai/clip-vit-base-patch32", checkpoint_dir=REPO_ROOT / "checkpoints"))
    text, menu, compare, banner, _ = zeroshot_tab.model_status(served)
    default = dict((key, name) for name, key in menu["choices"])["default"]
    assert default.startswith("scratch CLIP (served version") and "in place of openai/clip-vit-base-patch32" in default
    assert ("none", "none") in compare["choices"] and text.startswith("Model: Scratch CLIP")
    assert "answering in place of openai/clip-vit-base-patch32" in banner["value"]  # why: in the banner, once


def test_api_compare_matrix_and_relevancy(tiny_clip, tiny_siglip, tmp_path):
    settings = Settings(model=str(tiny_clip), extra_models=[str(tiny_siglip)], checkpoint_dir=tmp_path)
    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        gallery = [{"image": handle_file(str(p)), "caption": None} for p in EXAMPLES[:2]]
        long_label = "a red car " * 12
        label, _, status = client.predict(
            gallery,
            f"a cat, a dog, {long_label}",
            "photo",
            "",
            5,
            "extra-1",
            "single",
            True,
            0.0,
            "default",
            api_name="/zero_shot",
        )
        assert label["label"] == "none of these"  # SigLIP, natively
        assert "Compared with" in status and "✂️" in status and "16 tokens" in status
        heatmap, table = client.predict(
            gallery, "a cat, a dog", "photo", "", 3, "default", api_name="/zero_shot_matrix"
        )
        assert heatmap["visible"] and "<table" in heatmap["value"] and "2: flower.jpg</th>" in table["value"]
        maps = client.predict(gallery, "a cat, a dog", "photo", "", "extra-1", "a dog", api_name="/relevancy")
        assert len(maps) == 2 and "where 'a dog'" in maps[0]["caption"]
        # the old six-argument call still works through gradio_client (the new inputs have defaults)
        label, _, _ = client.predict(gallery, "a cat, a dog", "photo", "", 5, "default", api_name="/zero_shot")
        assert {c["label"] for c in label["confidences"]} == {"a cat", "a dog"}
