"""Cars heads: each head learns, the feature cache encodes once, backbones are checked, the whole pipeline
trains and evaluates on a miniature Stanford Cars devkit with a tiny CLIP."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipdemo import encoders
from clipdemo.cars import train_head, zeroshot_scores
from clipdemo.checkpoints import CheckpointError, load_checkpoint
from clipdemo.data import DataError, ImageDataset, Split
from clipdemo.data.sources import load_source
from clipdemo.data.splits import Part, plan_splits
from clipdemo.features import (
    Backbone,
    EncodingStopped,
    encode_split,
    feature_cache_path,
    merge_shards,
    save_features,
    zero_shot_classifier,
)
from clipdemo.heads import (
    C_GRID,
    DEFAULT_HEAD,
    FOLDS,
    HEADS,
    HeadClassifier,
    LinearProbe,
    accuracy,
    build_head,
    fit_head,
    predict_logits,
)
from clipdemo.pipeline import evaluate
from clipdemo.scoring import Rule, ZeroShotClassifier
from clipdemo.testing import make_clip_folder, write_minicars

METRICS = {"acc1", "acc5", "mean_per_class_recall", "weighted_f1", "n"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- heads on synthetic features --------------------------------------------------------------------------


TEXT = F.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)


def separable_task(seed=0, per_class=30, permuted=True):
    """Features clustered around the class text embeddings ``TEXT``, labelled with a permutation of the
    classes when ``permuted``, so zero-shot is wrong on every class and only a trained head gets it right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(TEXT)).repeat(per_class)
    centre = torch.roll(torch.arange(len(TEXT)), 1)[y] if permuted else y
    return F.normalize(TEXT[centre] + 0.15 * torch.randn(len(y), TEXT.shape[1], generator=g), dim=-1), y


def fit(name, train, validation, text=TEXT, scale=10.0, **kw):
    return fit_head(name, train, validation, zeroshot=ZeroShotClassifier(text, Rule(scale=scale)), **kw)


@pytest.mark.parametrize("name", list(HEADS))
def test_each_head_learns_a_separable_task(name):
    x, y = separable_task(seed=0)
    vx, vy = separable_task(seed=1)
    assert float(((10 * vx @ TEXT.T).argmax(1) == vy).float().mean()) == 0.0  # zero-shot gets none right
    result = fit(name, (x, y), (vx, vy), lr=1e-2 if name == "zeroshot-init" else None)
    assert result.protocol == "validation" and result.n_selection == 120 and result.n_fit == 120
    assert result.val_acc >= 0.95 and result.zeroshot_val_acc == 0.0
    assert accuracy(result.head, vx, vy) == result.val_acc  # the chosen head is the one returned
    assert result.stopped == "finished" and result.steps > 0 and not result.head.training


def test_linear_is_scikit_learns_logistic_regression_copied_into_torch():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = separable_task(seed=0, per_class=10, permuted=False)
    x = F.normalize(x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3)), dim=-1)  # overlap
    vx, vy = separable_task(seed=1, per_class=10, permuted=False)
    result = fit("linear", (x, y), (vx, vy))
    assert set(result.hyperparameters) == {"C"} and result.hyperparameters["C"] in C_GRID
    scaler = StandardScaler().fit(x.double().numpy())
    clf = LogisticRegression(C=result.hyperparameters["C"], max_iter=1000).fit(scaler.transform(x.double().numpy()), y)
    want = clf.decision_function(scaler.transform(vx.double().numpy()))
    torch.testing.assert_close(predict_logits(result.head, vx).double(), torch.from_numpy(want), atol=1e-3, rtol=1e-3)
    assert isinstance(result.head, LinearProbe)  # a torch module: safetensors checkpoints, serving unchanged


def test_fewer_images_than_dimensions_fit_the_same_probe_in_their_span():
    # 12 images in 64 dimensions: the fit runs in the images' span (fewer parameters); the solution is
    # scikit-learn's on all 64 standardised dimensions
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(5)
    text = F.normalize(torch.randn(4, 64, generator=g), dim=-1)
    y = torch.arange(4).repeat(3)
    x = F.normalize(text[y] + 0.3 * torch.randn(12, 64, generator=g), dim=-1)
    vy = torch.arange(4).repeat(5)
    vx = F.normalize(text[vy] + 0.3 * torch.randn(20, 64, generator=g), dim=-1)
    result = fit("linear", (x, y), (vx, vy), text=text)
    scaler = StandardScaler().fit(x.double().numpy())
    clf = LogisticRegression(C=result.hyperparameters["C"], max_iter=1000).fit(scaler.transform(x.double().numpy()), y)
    want = clf.decision_function(scaler.transform(vx.double().numpy()))
    got = predict_logits(result.head, vx).double()
    torch.testing.assert_close(
        got - got.mean(1, keepdim=True), torch.from_numpy(want - want.mean(1, keepdims=True)), atol=2e-3, rtol=2e-3
    )
    assert result.val_acc >= 0.9


def test_default_head_starts_at_zero_shot_and_never_ends_below_it():
    # zero-shot is already right: the blend keeps it (or ties it); on a permuted task it leaves it
    x, y = separable_task(permuted=False)
    vx, vy = separable_task(seed=1, permuted=False)
    blend = build_head(DEFAULT_HEAD, num_classes=4, embed_dim=16, class_embeddings=TEXT, rule=Rule(scale=10.0))
    assert torch.equal(blend(x).argmax(1), (x @ TEXT.T).argmax(1))  # as built (alpha 0): exactly zero-shot
    for permuted in (False, True):
        x, y = separable_task(permuted=permuted)
        vx, vy = separable_task(seed=1, permuted=permuted)
        result = fit(DEFAULT_HEAD, (x, y), (vx, vy))
        assert result.val_acc >= result.zeroshot_val_acc and result.val_acc >= 0.95
        assert "alpha" in result.hyperparameters and "zero-shot" in result.selection
    assert result.hyperparameters["alpha"] > 0  # zero-shot is useless there: the probe takes over


def test_tiny_validation_sets_select_by_cross_validation_on_train():
    x, y = separable_task(seed=0, per_class=4)  # 16 training images
    vx, vy = separable_task(seed=1, per_class=1)  # 4 validation images: too few to choose on
    for name in HEADS:
        result = fit(name, (x, y), (vx, vy), lr=1e-2 if name == "zeroshot-init" else None)
        assert result.protocol == "k-fold" and result.n_selection == 20 and result.n_fit == 20
        assert f"{FOLDS}-fold stratified cross-validation on 20 images" in result.selection, result.selection
        if name in ("zeroshot-blend", "linear", "mlp-logits"):
            assert result.val_acc >= 0.9, (name, result.val_acc)
    # one image per class: no stratified folds exist; plain k-fold, and the default never drops below zero-shot
    result = fit(DEFAULT_HEAD, separable_task(per_class=1, permuted=False), None)
    assert result.protocol == "k-fold" and "cross-validation on 4 images" in result.selection
    assert result.val_acc >= result.zeroshot_val_acc


def test_adam_budgets_are_steps_so_small_data_converges():
    x, y = separable_task(seed=0, per_class=3)  # 12 images: one step an epoch
    vx, vy = separable_task(seed=1, per_class=6)
    result = fit("mlp-logits", (x, y), (vx, vy), min_validation=len(vy))
    assert result.hyperparameters["budget_steps"] == 300 and result.hyperparameters["lr"] == 2e-4  # the tutorial's lr
    assert result.val_acc >= 0.9  # 6 epochs would be 6 steps: the untrained head


def test_zeroshot_init_starts_at_zero_shot_which_is_a_candidate():
    x, y = separable_task(permuted=False)
    head = build_head("zeroshot-init", num_classes=4, embed_dim=16, class_embeddings=TEXT, rule=Rule(scale=50.0))
    torch.testing.assert_close(head(x), 50.0 * x @ TEXT.T)
    result = fit("zeroshot-init", (x, y), (x, y), scale=50.0)
    assert result.history[0]["steps"] == 0 and result.history[0]["acc"] == result.zeroshot_val_acc == 1.0
    assert result.val_acc == 1.0  # accuracy ties are broken by the lower cross-entropy


def test_mlp_logits_is_the_tutorials_head():
    text = F.normalize(torch.randn(196, 32), dim=-1)
    head = build_head("mlp-logits", num_classes=196, embed_dim=32, class_embeddings=text, rule=Rule(scale=100.0))
    trainable = [n for n, p in head.named_parameters() if p.requires_grad]
    # the notebook's printed "Params to learn" list, in order
    assert trainable == [
        f"fc{a}.{b}.{w}"
        for a, b in ((1, 0), (1, 1), (2, 0), (2, 1), (2, 3), (2, 4), (3, 0), (3, 1))
        for w in ("weight", "bias")
    ]
    assert head.fc1[0].out_features == 980 and head.fc2[3].in_features == 980 and head.fc3[0].out_features == 196
    assert [m.p for m in head.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.3]


def test_should_stop_before_anything_is_scored_returns_no_head():
    x, y = separable_task()
    for name in ("linear", "mlp-logits"):
        result = fit(name, (x, y), (x, y), should_stop=lambda: True)
        assert result.stopped == "cancelled" and result.steps == 0  # train_head then writes no checkpoint
    assert result.hyperparameters == {"steps": 0, **result.hyperparameters}  # only the untrained start was scored
    with pytest.raises(ValueError, match="Unknown head"):
        build_head("resnet", num_classes=2, embed_dim=2)


# --- the feature cache ----------------------------------------------------------------------------------


class CountingEncoder:
    """A stand-in backbone: the embedding is the image's mean colour; counts what it encodes."""

    name, logit_scale, context_length, precision = "counting", 10.0, 77, "fp32"
    device = torch.device("cpu")

    def __init__(self):
        self.images = 0
        self.texts = 0

    def encode_images(self, images):
        self.images += len(images)
        means = np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) + 1 for im in images])
        return F.normalize(torch.from_numpy(means), dim=-1)

    def encode_texts(self, texts):
        self.texts += len(texts)
        return F.normalize(torch.tensor([[len(t), t.count("a") + 1, 1.0] for t in texts]), dim=-1)

    def describe(self):
        return "counting"


def png(colour, seed) -> bytes:
    pixels = np.full((8, 8, 3), colour, dtype=np.uint8)
    pixels[0, 0] = seed % 256
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def colour_split(n=10) -> Split:
    images = [png((200, 30, 30) if i % 2 else (30, 30, 200), i) for i in range(n)]
    images[3] = b"not an image at all"  # unreadable: skipped and counted
    return Split(images, [i % 2 for i in range(n)])


def test_second_encode_hits_the_cache_and_encodes_nothing(tmp_path):
    encoder, split = CountingEncoder(), colour_split()
    features, labels, skipped = encode_split(
        encoder, split, batch_size=4, cache_dir=tmp_path, key_parts=("d", "train"), progress=lambda info: None
    )
    assert (encoder.images, skipped, features.shape, labels.tolist()) == (9, 1, (9, 3), [0, 1, 0, 0, 1, 0, 1, 0, 1])
    events = []
    again = encode_split(encoder, split, cache_dir=tmp_path, key_parts=("d", "train"), progress=events.append)
    assert encoder.images == 9 and again.fresh == 0 and events[-1].cached  # nothing encoded the second time
    torch.testing.assert_close(again.features, features)
    assert again.skipped == 1 and 3 not in again.kept.tolist()
    encode_split(encoder, split, cache_dir=tmp_path, key_parts=("d", "test"), progress=events.append)
    assert encoder.images == 18  # another key, another file
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_damaged_or_stale_cache_is_rebuilt(tmp_path):
    encoder, split = CountingEncoder(), colour_split()
    path = feature_cache_path(encoder, ("d", "train"), tmp_path)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"garbage")
    encode_split(encoder, split, cache_dir=tmp_path, key_parts=("d", "train"), progress=lambda i: None)
    assert encoder.images == 9
    relabelled = Split(split.images, [1 - y for y in split.labels])  # same key, different content
    _, labels, _ = encode_split(
        encoder, relabelled, cache_dir=tmp_path, key_parts=("d", "train"), progress=lambda i: None
    )
    assert encoder.images == 18 and labels.tolist()[0] == 1


def test_shards_merge_into_the_single_process_cache(tmp_path):
    encoder, split = CountingEncoder(), colour_split(11)
    whole = encode_split(encoder, split, batch_size=4, progress=lambda i: None)
    parts = [encode_split(encoder, split, batch_size=3, shard=(r, 3), progress=lambda i: None) for r in (2, 0, 1)]
    merged = merge_shards(parts)
    torch.testing.assert_close(merged.features, whole.features)
    assert merged.kept.tolist() == whole.kept.tolist() and merged.skipped == whole.skipped == 1
    # rank 0 writes what one process would have written; a later single-process run finds it
    save_features(feature_cache_path(encoder, ("d", "train"), tmp_path), merged, len(split))
    before = encoder.images
    cached = encode_split(encoder, split, cache_dir=tmp_path, key_parts=("d", "train"), progress=lambda i: None)
    assert encoder.images == before and cached.kept.tolist() == whole.kept.tolist()
    share = encode_split(
        encoder, split, cache_dir=tmp_path, key_parts=("d", "train"), shard=(1, 3), progress=lambda i: None
    )
    assert share.kept.tolist() == [1, 4, 7, 10] and share.skipped == 0 and encoder.images == before


def test_a_stop_while_encoding_caches_nothing(tmp_path):
    encoder, split, polls = CountingEncoder(), colour_split(), []

    def stop_after_two_polls():
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(EncodingStopped, match="4 of 10 done"):
        encode_split(
            encoder,
            split,
            batch_size=2,
            cache_dir=tmp_path,
            key_parts=("d",),
            should_stop=stop_after_two_polls,
            progress=lambda i: None,
        )
    assert encoder.images == 3 and not list(tmp_path.iterdir())  # 4 done, image 3 unreadable


def test_text_embeddings_are_cached_on_disk(tmp_path):
    encoder = CountingEncoder()
    classifier = zero_shot_classifier(encoder, ["Acura RL", "Audi A4"], cache_dir=tmp_path)
    assert classifier.embeddings.shape == (2, 3) and classifier.rule == Rule(scale=10.0)
    assert encoder.texts == 16  # 8 templates x 2 classes
    fresh = CountingEncoder()
    fresh.name = "counting"  # same identity, new process: the file answers
    again = zero_shot_classifier(fresh, ["Acura RL", "Audi A4"], cache_dir=tmp_path)
    assert fresh.texts == 0 and torch.equal(again.embeddings, classifier.embeddings) and again.rule == classifier.rule


# --- the whole pipeline on a miniature devkit, with a tiny CLIP --------------------------------------------


def test_tutorial_split_reproduces_the_notebook_sizes():
    images = [b"image %d" % i for i in range(8144)]  # distinct bytes: the leak check finds no copies
    dataset = ImageDataset(["a", "b"], {"train": Split(images, [i % 2 for i in range(8144)])}, "fake", "fp")
    plan = plan_splits(dataset, "tutorial")
    assert [len(plan.train), len(plan.validation), len(plan.evaluation)] == [7349, 408, 387]
    parts = [set(p.indices) for p in (plan.train, plan.validation, plan.evaluation)]
    assert not parts[0] & parts[1] and not parts[1] & parts[2] and not parts[0] & parts[2] and plan.leak == ""


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    root = write_minicars(tmp_path_factory.mktemp("cars"), classes=4, per_class_train=8, per_class_test=3)
    (root / "cars_train" / "00002.jpg").write_bytes(b"\xff\xd8 this jpeg is broken")  # skipped, counted
    return load_source(str(root))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_clip_folder(tmp_path_factory.mktemp("tiny-a"), "tiny", seed=0)


@pytest.fixture(scope="module")
def trained(cars, tiny, tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    result = train_head(
        cars,
        str(tiny),
        work / "head",
        head="linear",
        epochs=3,
        split="official",
        seed=1,
        cache_dir=work / "cache",
        progress=lambda info: None,
    )
    return result.to_json(), work


def test_train_head_writes_a_checkpoint_with_an_honest_card(trained, cars, tiny):
    result, work = trained
    assert METRICS <= set(result) and METRICS <= set(result["zeroshot"])
    assert result["n"] == result["zeroshot"]["n"] == 12  # both scored on the same 12 official test images
    skipped = result["skipped"]
    assert skipped["train"] + skipped["validation"] == 1 and skipped["evaluation"] == 0  # the broken jpeg, counted
    assert result["encoded_images"] == 31 + 12
    state, config, card = load_checkpoint(work / "head", kind="cars-head")
    assert config["backbone"]["spec"] == str(tiny.resolve()) and config["head"]["name"] == "linear"
    assert card["classes"] == cars.class_names and card["seed"] == 1 and card["split_protocol"] == "official"
    assert "the test split (12)" in card["split"] and "10% per class" in card["split"]
    assert card["metrics"]["acc1"] == result["acc1"] and len(card["metrics"]["confusion"]) == 4
    assert card["zeroshot_metrics"]["acc1"] == result["zeroshot"]["acc1"]
    assert card["validation"]["acc1"] == result["best_val_acc"] and card["validation"]["protocol"] == "k-fold"
    assert card["validation"]["zeroshot_acc1"] == result["zeroshot_val_acc"] and "cross-validation" in card["selection"]
    assert set(card["hyperparameters"]) == {"C"}
    assert state["zeroshot.classifier"].shape == (4, 16)


def test_retraining_on_a_warm_cache_encodes_nothing_and_loads_no_model(trained, cars, tiny, monkeypatch):
    _, work = trained

    def no_loading(*a, **k):
        raise AssertionError("the backbone was loaded although everything was cached")

    monkeypatch.setattr(encoders, "load_encoder", no_loading)
    result = train_head(
        cars,
        str(tiny),
        work / "mlp",
        head="mlp-logits",
        epochs=2,
        split="official",
        seed=1,
        cache_dir=work / "cache",
        progress=lambda info: None,
    ).to_json()
    assert result["encoded_images"] == 0 and METRICS <= set(result)
    metrics = evaluate(work / "mlp", cars, "test", cache_dir=work / "cache", progress=lambda info: None).to_json()
    assert METRICS <= set(metrics) and metrics["n"] == 12 and metrics["skipped"] == 0 and metrics["leak"] == ""
    assert metrics["acc1"] == pytest.approx(result["acc1"])  # same images, same head, same numbers


def test_tutorial_split_trains_zeroshot_init_and_evaluates(cars, tiny, tmp_path):
    prompts = ("This is photo of {} car",)  # the tutorial's one prompt, instead of the 8 Cars templates
    result = train_head(
        cars,
        str(tiny),
        tmp_path / "zs",
        head="zeroshot-init",
        epochs=2,
        split="tutorial",
        templates=prompts,
        cache_dir=tmp_path / "cache",
        progress=lambda info: None,
    ).to_json()
    card, config = (json.loads((tmp_path / "zs" / f).read_text()) for f in ("card.json", "config.json"))
    assert card["templates"] == config["templates"] == list(prompts)
    assert result["zeroshot"]["acc1"] == card["zeroshot_metrics"]["acc1"]
    held_out = plan_splits(cars, "tutorial").evaluation.indices  # 32 train images: 5% held out, twice
    assert result["split"] == "tutorial" and result["n"] == len(set(held_out) - {1})  # image 1 is unreadable
    # the head starts as zero-shot and keeps step 0 unless training beats it on the selection images
    validation = card["validation"]
    assert validation["candidates"][0]["steps"] == 0 and result["best_val_acc"] >= validation["zeroshot_acc1"]
    metrics = evaluate(
        tmp_path / "zs", cars, "tutorial", cache_dir=tmp_path / "cache", progress=lambda i: None
    ).to_json()
    assert metrics["n"] == result["n"] and metrics["acc1"] == pytest.approx(result["acc1"])


def test_a_stop_before_the_first_step_writes_no_checkpoint(trained, cars, tiny):
    _, work = trained
    with pytest.raises(RuntimeError, match="before its first step"):
        train_head(
            cars,
            str(tiny),
            work / "stopped",
            head="linear",
            split="official",
            cache_dir=work / "cache",
            progress=lambda info: None,
            should_stop=lambda: True,
        )
    assert not (work / "stopped").exists()


def test_classifier_predicts_both_rankings(trained, cars, tiny):
    _, work = trained
    classifier = HeadClassifier(work / "head")
    head, zeroshot = classifier.predict(cars.splits["test"].images[0], k=5)
    assert len(head) == len(zeroshot) == 4  # k is capped at the number of classes
    assert {p.label for p in head} == set(cars.class_names) == {p.label for p in zeroshot}
    assert sum(p.score for p in head) == pytest.approx(1.0, abs=1e-5)


def test_a_different_backbone_is_refused(trained, tiny, tmp_path):
    _, work = trained
    other = make_clip_folder(tmp_path / "tiny-b", "tiny", seed=1)
    with pytest.raises(CheckpointError, match="trained on the backbone .* can't be used with"):
        HeadClassifier(work / "head", backbone=str(other))
    copy = make_clip_folder(tmp_path / "tiny-a-copy", "tiny", seed=0)  # same weights elsewhere: accepted
    assert HeadClassifier(work / "head", backbone=str(copy), load_backbone=False).backbone.spec == str(copy.resolve())


def test_evaluating_on_other_classes_is_refused(trained, cars):
    _, work = trained
    renamed = ImageDataset(["x", *cars.class_names[1:]], cars.splits, "other", "fp2")
    with pytest.raises(CheckpointError, match="class 1 is 'x'"):
        evaluate(work / "head", renamed, "test")
    with pytest.raises(DataError, match="no 'validation' split"):
        evaluate(work / "head", cars, "validation")


def test_backbone_object_spec_and_laziness(tiny):
    backbone = Backbone(str(tiny))
    assert not backbone.loaded and backbone.fingerprint == Backbone(str(tiny) + "/").fingerprint
    assert not backbone.loaded  # fingerprinting reads files, it does not load the model


# --- the default head through the CLI, on 6 clearly separable classes ----------------------------------------


@pytest.mark.parametrize("per_class", [12, 4])
def test_default_head_through_the_cli_beats_zero_shot(per_class, tiny, tmp_path, monkeypatch, capsys):
    """`train head` with default options, then `eval` on the devkit's official test split (never seen)."""
    from clipdemo.cli import main

    root = write_minicars(tmp_path / "cars", classes=6, per_class_train=per_class, per_class_test=5, seed=per_class)
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    assert main(["train", "head", "--data", str(root), "--backbone", str(tiny), "--out", str(tmp_path / "head")]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["head"] == "zeroshot-blend" and trained["split"] == "tutorial"
    assert main(["eval", "--checkpoint", str(tmp_path / "head"), "--data", str(root), "--split", "test"]) == 0
    test = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = load_source(str(root))
    zeroshot, _ = zeroshot_scores(str(tiny), data, Part("test", tuple(range(30))), progress=lambda info: None)
    assert test["n"] == zeroshot.n == 30
    assert test["acc1"] >= 0.9 and test["acc1"] >= zeroshot.acc1, (test, zeroshot)
    print(f"{per_class} per class: head {test['acc1']:.3f}, zero-shot {zeroshot.acc1:.3f}")
    card = json.loads((tmp_path / "head" / "card.json").read_text())
    validation = card["validation"]  # a handful of validation images: chosen by cross-validation on train
    plan = plan_splits(load_source(str(root)), "tutorial")  # train + validation pooled, the tutorial's 5% left out
    assert validation["protocol"] == "k-fold" and validation["n"] == len(plan.train) + len(plan.validation)
    assert validation["acc1"] >= validation["zeroshot_acc1"] and "cross-validation" in card["selection"]
