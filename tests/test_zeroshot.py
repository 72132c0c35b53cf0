"""Zero-shot scoring: label parsing and its limits, template sets, prompt ensembling, the text-embedding cache (per
model, templates and label; thread-safe and bounded), softmax over scaled cosines, each image encoded once, and a
real tiny CLIP end to end."""

import threading

import pytest
import torch
from PIL import Image

from clipdemo.zeroshot import (
    CARS_TEMPLATES,
    IMAGENET_TEMPLATES,
    MAX_LABEL_CHARS,
    EmbeddingCache,
    LabelError,
    build_classifier,
    classify,
    parse_labels,
    resolve_templates,
)


class FakeEncoder:
    """Known embeddings: texts map to fixed vectors, images to a vector chosen by their colour."""

    name, logit_scale, context_length, precision = "fake", 10.0, 77, "fp32"
    scoring, logit_bias = "softmax", 0.0
    device = torch.device("cpu")

    def __init__(self, text_vectors, image_vectors):
        self.text_vectors, self.image_vectors = text_vectors, image_vectors
        self.text_calls, self.image_calls = [], []

    def encode_texts(self, texts):
        self.text_calls.append(list(texts))
        return torch.nn.functional.normalize(torch.tensor([self.text_vectors[t] for t in texts]), dim=-1)

    def encode_images(self, images):
        self.image_calls.append(len(images))
        return torch.nn.functional.normalize(
            torch.tensor([self.image_vectors[im.getpixel((0, 0))] for im in images]), dim=-1
        )

    def token_lengths(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def describe(self):
        return "fake"


def test_parse_labels_trims_dedupes_and_drops_empties():
    assert parse_labels(" cat,dog\n\n a  red   car ,Cat, ,dog") == ["cat", "dog", "a red car"]


def test_parse_labels_drops_control_characters_but_keeps_emoji_joiners():
    astronaut = "👩🏽\u200d🚀"  # a zero-width joiner (Cf) holds this emoji together
    assert parse_labels(f"c\x00at, \x1b[31mred, do\tg, {astronaut}") == ["cat", "[31mred", "do g", astronaut]
    with pytest.raises(LabelError):
        parse_labels("\x00, \x07")


@pytest.mark.parametrize("text", ["", "   ", ",,,\n, ,", None])
def test_parse_labels_refuses_empty(text):
    with pytest.raises(LabelError, match="at least one label"):
        parse_labels(text)


def test_parse_labels_limits():
    assert len(parse_labels(",".join(f"l{i}" for i in range(100)))) == 100
    with pytest.raises(LabelError, match="Too many labels: 101"):
        parse_labels(",".join(f"l{i}" for i in range(101)))
    assert parse_labels("x" * 5000) == ["x" * MAX_LABEL_CHARS]
    with pytest.raises(LabelError, match="too long"):
        parse_labels("a" * 60_000)


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert resolve_templates("cars-8") == CARS_TEMPLATES and len(CARS_TEMPLATES) == 8
    assert resolve_templates("label") == ("{}",)
    assert resolve_templates("a {} drawn in {curly} braces") == ("a {} drawn in {curly} braces",)
    with pytest.raises(LabelError, match=r"custom template with \{\}"):
        resolve_templates("a photo of a cat")


def test_ensembling_is_the_renormalised_mean_of_normalised_prompts():
    vectors = {"a x": [3.0, 0.0], "b x": [0.0, 1.0], "a y": [1.0, 1.0], "b y": [-1.0, 1.0]}
    enc = FakeEncoder(vectors, {})
    got = build_classifier(enc, ["x", "y"], ("a {}", "b {}"), EmbeddingCache(10))
    # by hand: x -> mean([1,0],[0,1]) = [.5,.5] -> [.7071,.7071]; y -> mean([.7071,.7071],[-.7071,.7071]) -> [0,1]
    assert torch.allclose(got, torch.tensor([[0.70710677, 0.70710677], [0.0, 1.0]]), atol=1e-6)


def test_text_embeddings_are_cached_per_model_templates_and_label():
    enc = FakeEncoder({"x": [1.0, 0.0], "y": [0.0, 1.0], "a x": [1.0, 1.0]}, {})
    cache = EmbeddingCache(10)
    build_classifier(enc, ["x", "y"], ("{}",), cache)
    build_classifier(enc, ["y", "x"], ("{}",), cache)
    assert enc.text_calls == [["x", "y"]]  # the repeated label set cost no text encoding
    build_classifier(enc, ["x"], ("a {}",), cache)  # another template set is another key
    assert enc.text_calls[-1] == ["a x"]


def test_classify_ranks_with_softmax_of_scaled_cosines():
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    enc = FakeEncoder(
        {"red": [1.0, 0.0], "blue": [0.0, 1.0], "purple": [1.0, 1.0]},
        {(255, 0, 0): [1.0, 0.0], (0, 0, 255): [0.0, 1.0]},
    )
    out = classify(
        enc,
        [red, blue],
        ["blue", "red", "purple"],
        ("{}",),
        top_k=2,
        text_cache=EmbeddingCache(10),
        image_cache=EmbeddingCache(10),
    )
    # red image: cosines blue 0, red 1, purple .7071; x10, softmax
    logits = torch.tensor([0.0, 10.0, 7.0710678])
    p = logits.softmax(0)
    assert [x.label for x in out[0]] == ["red", "purple"]
    assert out[0][0].score == pytest.approx(float(p[1]), rel=1e-5)
    assert out[0][1].score == pytest.approx(float(p[2]), rel=1e-5)
    assert [x.label for x in out[1]] == ["blue", "purple"]


def test_same_image_is_encoded_once():
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    enc = FakeEncoder({"red": [1.0, 0.0]}, {(255, 0, 0): [1.0, 0.0]})
    caches = dict(text_cache=EmbeddingCache(10), image_cache=EmbeddingCache(10))
    classify(enc, [red], ["red"], ("{}",), **caches)
    classify(enc, [red.copy()], ["red"], ("{}",), **caches)
    assert enc.image_calls == [1]


def test_classify_refuses_no_images():
    with pytest.raises(LabelError, match="at least one image"):
        classify(FakeEncoder({}, {}), [], ["a"])


def test_cache_is_thread_safe_and_bounded():
    cache = EmbeddingCache(50)
    threads = [
        threading.Thread(target=lambda i=i: [cache.put((i, j), torch.zeros(2)) for j in range(100)]) for i in range(4)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(cache) == 50


def test_real_tiny_clip_end_to_end(tiny_clip):
    from clipdemo.encoders import load_encoder

    enc = load_encoder(str(tiny_clip))
    images = [Image.new("RGB", (40, 30), c) for c in ["red", "blue"]]
    out = classify(enc, images, ["red", "blue", "a very long label " * 40], resolve_templates("imagenet-80"))
    assert len(out) == 2 and all(len(r) == 3 for r in out)
    for ranked in out:
        scores = [p.score for p in ranked]
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
