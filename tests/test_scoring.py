"""Each family's zero-shot rule lives in clipdemo.scoring, and every tab shows its numbers: a SigLIP backbone gives
the same zero-shot score for the same image and label on the Zero-shot, Cars and Your classes tabs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipdemo.cars import train_head
from clipdemo.checkpoints import claim_version, promote
from clipdemo.data.sources import load_source
from clipdemo.scoring import SIGMOID, SOFTMAX, Rule, ZeroShotClassifier, blend
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import make_siglip_folder, write_minicars
from clipdemo.ui import cars_tab, fewshot_tab, zeroshot_tab

IMAGES = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
CLASSES = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=-1)


def test_softmax_family_ranks_labels_against_each_other_and_sums_to_one():
    rule = Rule(SOFTMAX, scale=50.0)
    probs = rule.probabilities(IMAGES, CLASSES)
    assert torch.allclose(probs, (50.0 * IMAGES @ CLASSES.T).softmax(-1))
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    # several labels per image: each label on its own, by its cosine (CLIP has no per-label probability)
    assert torch.allclose(rule.probabilities(IMAGES, CLASSES, multi_label=True), (IMAGES @ CLASSES.T).clamp(min=0))


def test_sigmoid_family_scores_each_label_on_its_own_with_its_bias():
    rule = Rule(SIGMOID, scale=10.0, bias=-10.0)
    probs = rule.probabilities(IMAGES, CLASSES)
    assert torch.allclose(probs, torch.sigmoid(10.0 * IMAGES @ CLASSES.T - 10.0))
    assert not torch.allclose(probs.sum(-1), torch.ones(3))
    assert torch.equal(rule.probabilities(IMAGES, CLASSES, multi_label=True), probs)  # already independent
    # the closed-set view (blend, cross-entropy) ranks as the sigmoid does
    assert torch.equal(rule.log_distribution(IMAGES, CLASSES).argsort(-1), probs.argsort(-1))


def test_rule_round_trips_a_config_and_reads_heads_saved_before_it_was_recorded():
    rule = Rule(SIGMOID, 12.5, -3.0)
    assert Rule.from_config({"scoring": rule.to_config()}) == rule
    assert Rule.from_config({"logit_scale": 42.0}) == Rule(SOFTMAX, 42.0, 0.0)


def test_blend_is_zero_shot_at_weight_zero_and_the_head_at_one():
    zeroshot = ZeroShotClassifier(CLASSES, Rule(scale=20.0))
    head = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(blend(zeroshot.logits(IMAGES), head, 0.0), zeroshot.logits(IMAGES).log_softmax(-1))
    assert torch.allclose(blend(zeroshot.logits(IMAGES), head, 1.0), head.log_softmax(-1))


@pytest.fixture(scope="module")
def siglip_served(tmp_path_factory):
    """A tiny SigLIP served as the zero-shot model, with a Cars head trained on it and promoted."""
    tmp = tmp_path_factory.mktemp("siglip-tabs")
    siglip = make_siglip_folder(tmp / "tiny-siglip")
    cars = load_source(str(write_minicars(tmp / "cars", classes=3, per_class_train=6, per_class_test=3, size=64)))
    root = tmp / "checkpoints"
    with claim_version(root, "cars-head", "siglip") as claim:
        train_head(cars, str(siglip), claim.folder, split="official", progress=lambda info: None)
    promote(root, "cars-head", claim.folder.name)
    train = cars.splits["train"]
    examples = [[str(p) for p, y in zip(train.images, train.labels) if y == c][:2] for c in range(3)]
    photo = str(cars.splits["test"].images[0])
    return Served(Settings(model=str(siglip), checkpoint_dir=root)), list(cars.class_names), photo, examples


def test_a_siglip_backbone_shows_the_same_zero_shot_scores_on_every_tab(siglip_served):
    served, names, photo, examples = siglip_served
    labels = ", ".join(names)

    _, cars_zeroshot, _, _ = cars_tab.classify(served, photo)
    zeroshot_tab_cars, _, _ = zeroshot_tab.zero_shot(served, [photo], labels, "cars-8", "", len(names))
    assert set(cars_zeroshot) == set(names)
    for name in names:
        assert cars_zeroshot[name] == pytest.approx(zeroshot_tab_cars[name], abs=1e-5), name
    assert abs(sum(cars_zeroshot.values()) - 1) > 1e-3  # sigmoid scores, not a softmax over the classes

    rows = [*names, *[""] * (fewshot_tab.SLOTS - len(names))]
    files = [*examples, *[[]] * (fewshot_tab.SLOTS - len(names))]
    taught, _, _ = fewshot_tab.teach_handler(served, None, *rows, *files)
    _, fewshot_zeroshot, _ = fewshot_tab.classify_handler(taught, photo, 0.5)
    zeroshot_tab_photo, _, _ = zeroshot_tab.zero_shot(served, [photo], labels, "photo", "", len(names))
    for name in names:
        assert fewshot_zeroshot[name] == pytest.approx(zeroshot_tab_photo[name], abs=1e-5), name
