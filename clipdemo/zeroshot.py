"""Zero-shot classification: labels and prompt templates -> an ensembled text classifier -> ranked labels.

The classifier for a label is the mean of its normalised prompt embeddings, renormalised (CLIP's prompt
ensembling). Those are cached per (model, template set, label), so a repeated label set costs no text
encoding. Image embeddings are cached by pixel digest too: in the app a user edits labels and resubmits the
same image, which then costs no image encoding either.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from PIL import Image

from clipdemo.devices import l2_normalize
from clipdemo.encoders import Encoder
from clipdemo.errors import UserError
from clipdemo.scoring import SIGMOID, SOFTMAX, Rule
from clipdemo.templates import CARS_TEMPLATES, IMAGENET_TEMPLATES, TEMPLATE_SETS  # noqa: F401 - re-exported

MAX_LABELS = 100
MAX_LABEL_CHARS = 300  # longer labels are cut here, then the tokenizer truncates to the model's context
MAX_LABEL_TEXT = 50_000  # characters in the whole labels box
MAX_IMAGES = 16  # per request in the app; the library and CLI take any number, in batches


class LabelError(UserError):
    """Labels or templates the user typed can't be used; the message says why in one sentence."""


CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x9f]")  # Unicode Cc minus the whitespace ones; ZWJ (Cf) stays


def parse_labels(text: str, max_labels: int = MAX_LABELS) -> list[str]:
    """Split on commas and newlines, drop control characters (invisible, and no font draws them), collapse
    whitespace, drop empties, de-duplicate (case-insensitively, first spelling wins)."""
    if text is None or not str(text).strip():
        raise LabelError("Type at least one label, e.g. 'cat, dog, a red sports car'.")
    if len(text) > MAX_LABEL_TEXT:
        raise LabelError(f"The labels text is too long (over {MAX_LABEL_TEXT:,} characters).")
    return clean_labels(re.split(r"[,\n\r]", text), max_labels)


def clean_labels(raw_labels, max_labels: int = MAX_LABELS) -> list[str]:
    """``parse_labels``'s rules for labels already split (a Python list: a label may hold a comma)."""
    labels, seen = [], set()
    for raw in raw_labels:
        label = " ".join(CONTROL_CHARS.sub("", str(raw)).split())[:MAX_LABEL_CHARS]
        if label and label.casefold() not in seen:
            seen.add(label.casefold())
            labels.append(label)
    if not labels:
        raise LabelError("Type at least one label, e.g. 'cat, dog, a red sports car'.")
    if len(labels) > max_labels:
        raise LabelError(f"Too many labels: {len(labels)} given, at most {max_labels} allowed.")
    return labels


def resolve_templates(choice: str) -> tuple[str, ...]:
    """A named template set, or a custom template that holds ``{}`` where the label goes."""
    choice = (choice or "").strip()
    if choice in TEMPLATE_SETS:
        return TEMPLATE_SETS[choice]
    if "{}" not in choice:
        raise LabelError(
            f"Unknown template '{choice[:40]}': use one of {', '.join(TEMPLATE_SETS)}, "
            "or a custom template with {} where the label goes, e.g. 'a photo of a {}.'"
        )
    if len(choice) > MAX_LABEL_CHARS:
        raise LabelError(f"The custom template is too long (over {MAX_LABEL_CHARS} characters).")
    return (choice,)


def fill(template: str, label: str) -> str:
    # str.replace, not str.format: a custom template may hold other braces.
    return template.replace("{}", label)


class EmbeddingCache:
    """Thread-safe LRU of embeddings: label embeddings keyed by (model, precision, engine, templates, label), image
    embeddings by (model, precision, engine, pixel digest)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._data: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.misses = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: torch.Tensor) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, keys: list[tuple], compute) -> torch.Tensor:
        """Stack the embeddings for ``keys``; ``compute(missing_keys) -> [M, D]`` fills the gaps, once each."""
        found = {key: self.get(key) for key in keys}
        missing = list(dict.fromkeys(key for key in keys if found[key] is None))
        if missing:
            self.misses += len(missing)
            for key, embedding in zip(missing, compute(missing)):
                self.put(key, embedding)
                found[key] = embedding
        return torch.stack([found[key] for key in keys])


TEXT_CACHE = EmbeddingCache(20_000)
IMAGE_CACHE = EmbeddingCache(256)


def ensemble(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    """CLIP's prompt ensembling: ``[C, T, D]`` normalised embeddings of each class's T prompts -> ``[C, D]``,
    their mean renormalised. Every classifier in clipdemo (zero-shot, Cars, the scratch CLIP) goes through it."""
    return l2_normalize(prompt_embeddings.mean(dim=1))


def build_classifier(
    encoder: Encoder, labels: list[str], templates: tuple[str, ...], cache: EmbeddingCache = TEXT_CACHE
) -> torch.Tensor:
    """[L, D] class embeddings: per label, the renormalised mean of its normalised prompt embeddings."""

    def encode(missing):
        prompts = [fill(t, key[-1]) for key in missing for t in templates]
        return ensemble(encoder.encode_texts(prompts).view(len(missing), len(templates), -1))

    return cache.lookup([(*model_key(encoder), templates, label) for label in labels], encode)


def model_key(encoder: Encoder) -> tuple:
    """What makes an encoder's embeddings what they are: the model, its precision and engine (torch or onnx)."""
    return encoder.name, encoder.precision, getattr(encoder, "engine", "torch")


def image_digest(image: Image.Image) -> str:
    digest = hashlib.blake2b(f"{image.mode}{image.size}".encode(), digest_size=16)
    digest.update(image.tobytes())
    return digest.hexdigest()


def encode_images_cached(encoder: Encoder, images: list[Image.Image], cache: EmbeddingCache = IMAGE_CACHE):
    """[N, D] image embeddings; only images not seen before (by pixel digest) go through the model."""
    keys = [(*model_key(encoder), image_digest(im)) for im in images]
    by_key = dict(zip(keys, images))
    return cache.lookup(keys, lambda missing: encoder.encode_images([by_key[key] for key in missing]))


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


def rank(probs: torch.Tensor, labels: list[str], top_k: int | None = None) -> list[list[Prediction]]:
    """Per row of ``probs`` [N, L], the labels sorted by score (ties keep label order), cut to ``top_k``."""
    k = len(labels) if not top_k else max(1, min(top_k, len(labels)))
    scores, index = probs.topk(k, dim=-1, sorted=True)
    return [
        [Prediction(labels[i], float(s)) for s, i in zip(row_s.tolist(), row_i.tolist())]
        for row_s, row_i in zip(scores, index)
    ]


# "None of these" below this: a probability for sigmoid families (each label on its own); for softmax families,
# whose probabilities always sum to 1 and so can't say "none", a cosine similarity (matching image-text pairs
# of OpenAI's CLIP sit around 0.25-0.35, unrelated ones below 0.2).
DEFAULT_THRESHOLD = {SIGMOID: 0.1, SOFTMAX: 0.2}


@dataclass(frozen=True)
class Truncation:
    label: str
    tokens: int  # what its prompt needs, in the template that leaves it the most room
    kept: int  # the model's context

    def sentence(self) -> str:
        return (
            f"'{shorten(self.label, 40)}' was cut to the model's {self.kept} tokens "
            f"({self.tokens - self.kept} of {self.tokens} dropped)"
        )


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis (a heading or a note; the full text is shown elsewhere)."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _label_end(template: str, label: str) -> str:
    """The prompt up to the label's end: if this fits the context, only template words after the label are cut."""
    return template.split("{}", 1)[0] + label


def _roomiest(templates: tuple[str, ...]) -> str:
    return min(templates, key=lambda t: len(_label_end(t, "")))


def _fits(encoder: Encoder, template: str, labels: list[str]) -> list[bool]:
    """Per label: does it keep all its tokens in ``template``?"""
    need = encoder.token_lengths([_label_end(template, label) for label in labels])
    return [n <= encoder.context_length for n in need]


def truncated_labels(encoder: Encoder, labels: list[str], templates: tuple[str, ...]) -> list[Truncation]:
    """Labels that lose tokens of their own in every template (the label itself is too long for the model), and by
    how much. A template's words after the label being cut is not a label cut (see ``cutting_templates``)."""
    roomiest = _roomiest(templates)
    cut = [label for label, fits in zip(labels, _fits(encoder, roomiest, labels)) if not fits]
    full = encoder.token_lengths([fill(roomiest, label) for label in cut])
    return [Truncation(label, n, encoder.context_length) for label, n in zip(cut, full)]


def cutting_templates(encoder: Encoder, labels: list[str], templates: tuple[str, ...]) -> tuple[str, ...]:
    """Templates so long, for this model's text context, that some label that fits elsewhere loses tokens in them
    (a 32-token scratch model with the 80 ImageNet templates: "a black and white photo of the {}." leaves no
    room). Checks the longest template first, so the usual case costs one tokenizer call per label."""
    if len(templates) < 2:
        return ()
    longest = max(templates, key=lambda t: len(_label_end(t, "")))
    if all(_fits(encoder, longest, labels)):
        return ()
    whole = [label for label, fits in zip(labels, _fits(encoder, _roomiest(templates), labels)) if fits]
    return tuple(t for t in templates if whole and not all(_fits(encoder, t, whole)))


@dataclass
class ZeroShotResult:
    labels: list[str]
    scores: torch.Tensor  # [N, L] in [0, 1], by the family's rule (``clipdemo.scoring``)
    similarity: torch.Tensor  # [N, L] cosine similarities
    scoring: str  # SOFTMAX or SIGMOID
    multi_label: bool
    threshold: float | None  # "none of these" below it (open set); None: closed set
    truncated: list[Truncation]
    cut_templates: tuple[str, ...] = ()  # templates too long for the model's text context (``cutting_templates``)

    @property
    def independent(self) -> bool:
        """Scores per label on their own (they don't sum to 1)."""
        return self.scoring == SIGMOID or self.multi_label

    @property
    def score_name(self) -> str:
        return "cosine similarity" if self.scoring == SOFTMAX and self.multi_label else "probability"

    @property
    def shown(self) -> torch.Tensor:
        """[N, L] what a display shows and ranks by: the signed cosine in CLIP's several-labels mode (the score there
        is the cosine clipped at 0, which would show every unrelated label as 0 and rank them arbitrarily), else
        the scores."""
        return self.similarity if self.score_name == "cosine similarity" else self.scores

    def gate(self) -> torch.Tensor:
        """What the threshold is compared with: the independent score, else the cosine similarity."""
        return self.scores if self.independent else self.similarity

    def none_of_these(self) -> list[bool]:
        if self.threshold is None:
            return [False] * len(self.scores)
        return (self.gate().max(dim=-1).values < self.threshold).tolist()

    @property
    def threshold_name(self) -> str:
        """What the threshold is a value of: a sigmoid family's probability, else a cosine similarity."""
        return "probability" if self.scoring == SIGMOID else "cosine similarity"

    @property
    def drawn_threshold(self) -> float | None:
        """The threshold where a chart of ``scores`` can draw it: on their own axis (independent scores); None for
        a softmax over the labels, whose "none of these" is decided on the cosine, not on the bars' probability."""
        return self.threshold if self.independent else None

    def bars(self, top_k: int | None = None) -> list[list[Prediction]]:
        """Per image, labels by score, none left out: what a chart draws (beside the threshold, if any)."""
        return rank(self.shown, self.labels, top_k)

    def ranked(self, top_k: int | None = None) -> list[list[Prediction]]:
        """Per image, labels by score; in multi-label mode with a threshold only the labels that clear it."""
        ranked = rank(self.shown, self.labels, top_k)
        if self.multi_label and self.threshold is not None:
            return [[p for p in row if p.score >= self.threshold] for row in ranked]
        return ranked

    def notices(self) -> list[str]:
        """What was cut: labels too long for the model, then templates too long for it (one sentence for all)."""
        notes = [t.sentence() + "." for t in self.truncated]
        if self.cut_templates:
            n, example = len(self.cut_templates), shorten(max(self.cut_templates, key=len), 50)
            notes.append(
                f"{n} of the templates (e.g. '{example}') are too long for this model's text context: in them the "
                "labels lose their end; a shorter template avoids it."
            )
        return notes


def zero_shot(
    encoder: Encoder,
    images: list[Image.Image],
    labels: list[str],
    templates: tuple[str, ...] = TEMPLATE_SETS["photo"],
    multi_label: bool = False,
    threshold: float | None = None,
    text_cache: EmbeddingCache = TEXT_CACHE,
    image_cache: EmbeddingCache = IMAGE_CACHE,
) -> ZeroShotResult:
    """Score every label for every image with the model's own rule; ``threshold`` turns on "none of these"."""
    if not images:
        raise LabelError("Add at least one image.")
    if threshold is not None and not 0 <= threshold <= 1:
        raise LabelError(f"The threshold must be between 0 and 1, not {threshold}.")
    classifier = build_classifier(encoder, labels, templates, text_cache)
    image_embeddings = encode_images_cached(encoder, images, image_cache)
    return ZeroShotResult(
        labels=list(labels),
        scores=Rule.of(encoder).probabilities(image_embeddings, classifier, multi_label),
        similarity=image_embeddings @ classifier.T,
        scoring=encoder.scoring,
        multi_label=multi_label,
        threshold=threshold,
        truncated=truncated_labels(encoder, labels, templates),
        cut_templates=cutting_templates(encoder, labels, templates),
    )


def classify(
    encoder: Encoder,
    images: list[Image.Image],
    labels: list[str],
    templates: tuple[str, ...] = TEMPLATE_SETS["photo"],
    top_k: int | None = None,
    text_cache: EmbeddingCache = TEXT_CACHE,
    image_cache: EmbeddingCache = IMAGE_CACHE,
) -> list[list[Prediction]]:
    """Rank ``labels`` for each image with the model's scoring rule (``clipdemo.scoring``)."""
    result = zero_shot(encoder, images, labels, templates, text_cache=text_cache, image_cache=image_cache)
    return result.ranked(top_k)
