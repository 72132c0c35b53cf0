"""Search tab: index up to 200 uploaded images (or the dataset folder the Admin configured), then search them by
text or by example, list near-duplicate pairs, and see the set as a 2-D map with the query marked.

A visitor's index lives in their session (``gr.State``, dropped with it); the configured dataset's index is
built once per process (its embeddings cached on disk under the checkpoint dir's cache) and shared read-only.
Results are shown as thumbnails with names relative to the dataset folder: server paths stay on the server.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from clipdemo.atomic import write_atomic
from clipdemo.images import load_image
from clipdemo.search import (
    DUPLICATE_THRESHOLD,
    MAX_PAIRS,
    MAX_TOP_K,
    MAX_UPLOADS,
    SearchError,
    SearchIndex,
    build_index,
    groups,
    index_folder,
    map_2d,
    near_duplicates,
    query_embedding,
    search,
)
from clipdemo.serving import Served
from clipdemo.ui.common import MODEL_QUEUE, STATE_TTL, check_first, gallery_paths, image_upload, user_errors

INTRO = (
    "**Find images by what they show**: index a set of images, then search it with words or with an example image; "
    "look-alike pairs and a map of the set come with it."
)
UPLOADS, DATASET = "your uploads", "the server's dataset"
THUMB = 256
THUMBS = Path(tempfile.gettempdir()) / "clipdemo-search-thumbnails"
MAX_THUMBS = 4000  # ~15 KB each; beyond this the oldest half is deleted
SHOWN_PAIRS = 8
DATASET_RECHECK = 600  # seconds before the shared dataset index looks at the folder again

_lock = threading.Lock()
_dataset: dict[tuple, tuple[float, SearchIndex]] = {}  # (root, model spec) -> (built at, index): one entry


def dataset_index(served: Served) -> SearchIndex:
    root = served.settings.search_root
    if root is None:
        raise SearchError("This server has no dataset to search (the Admin sets CLIPDEMO_SEARCH_ROOT); upload images.")
    choice = served.zero_shot()
    key = (str(root), str(getattr(choice.encoder, "path", None) or choice.encoder.name))
    with _lock:
        built = _dataset.get(key)
        if built is None or time.monotonic() - built[0] > DATASET_RECHECK:
            _dataset.clear()
            _dataset[key] = (time.monotonic(), index_folder(choice.encoder, root, cache_dir=served.settings.cache_dir))
        return _dataset[key][1]


def index_handler(served: Served, source: str, files, threshold: float, method: str):
    """(index state, status, near-duplicates table, map) for the uploads or the configured dataset."""
    if source == DATASET:
        index = dataset_index(served)
    else:
        paths = gallery_paths(files)
        index = build_index(served.zero_shot().encoder, paths, max_images=MAX_UPLOADS)
    skipped = (
        (
            f" Skipped {index.skipped} unreadable file(s): "
            + "; ".join(index.unreadable[:3])
            + ("; …" if index.skipped > 3 else "")
        )
        if index.skipped
        else ""
    )
    status = f"**Indexed {len(index)} image(s)** from {source}.{skipped} Now search by text or by example."
    return index, status, duplicates_text(index, threshold), map_points(index, None, method)


def check_index(source: str, files) -> None:
    """The index's input mistakes, said before any model runs (see ``check_first``)."""
    if source != DATASET and not gallery_paths(files):
        raise SearchError("Add at least one image to search over, then press Index.")
    if source != DATASET and len(gallery_paths(files)) > MAX_UPLOADS:
        raise SearchError(f"Too many images: {len(gallery_paths(files))} given, at most {MAX_UPLOADS}.")


def check_query(index: SearchIndex | None, text: str, image) -> None:
    if index is None:
        raise SearchError("Index some images first (step 1), then search them.")
    if image is None and not (text or "").strip():
        raise SearchError("Type what to look for (e.g. 'a red car'), or give an image to search by example.")


def rethreshold(index: SearchIndex | None, threshold: float):
    """The near-duplicate list at a new threshold, from the index already built (no model runs)."""
    return gr.skip() if index is None else duplicates_text(index, threshold)


def redraw(index: SearchIndex | None, method: str):
    """The map in the other projection, from the index already built (the query star comes back with a search)."""
    return gr.skip() if index is None else map_points(index, None, method)


def duplicates_text(index: SearchIndex, threshold: float) -> str:
    pairs = near_duplicates(index, float(threshold))
    if not pairs:
        return f"No near-duplicate pairs at cosine ≥ {threshold:g}."
    rows = "\n".join(f"| {index.names[i]} | {index.names[j]} | {s:.4f} |" for i, j, s in pairs[:SHOWN_PAIRS])
    more = (
        f"\n\n…and {len(pairs) - SHOWN_PAIRS} more (raise the threshold to see fewer)."
        if len(pairs) > SHOWN_PAIRS
        else ""
    )
    capped = "at least " if len(pairs) == MAX_PAIRS else ""
    return (
        f"**{capped}{len(pairs)} near-duplicate pair(s)** at cosine ≥ {threshold:g}:\n\n"
        f"| image | image | cosine |\n|---|---|---|\n{rows}{more}"
    )


MAP_AXES = {
    "PCA": ("the direction the images differ most", "the next one, at a right angle"),
    "t-SNE": ("t-SNE 1 (only closeness counts)", "t-SNE 2"),
}
MAP_CAPTION = (
    "Each dot is an image, placed so that images CLIP finds alike sit close together; hover a dot for its name. "
    "Colours are look-alike groups found from the images alone (k-means clusters), or the class folders when the "
    "dataset has them; the “★ query” dot is what you searched for."
)


QUERY = "★ query"


def map_points(index: SearchIndex, query, method: str, query_label: str = "query"):
    """The map as a table for ``gr.ScatterPlot``: x, y, the image's name (shown on hover) and its group. The query's
    row is there even before a search (off the axes): the plot fixes its colours at the first draw and would drop
    a group that appears later."""
    import pandas as pd

    xy, query_xy = map_2d(index, query, "tsne" if method == "t-SNE" else "pca")
    names, what = groups(index)
    rows = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "image": index.names, what: names})
    rows.loc[len(rows)] = [*(query_xy if query_xy is not None else (np.nan, np.nan)), query_label, QUERY]
    x_title, y_title = MAP_AXES[method]
    return gr.ScatterPlot(
        rows,
        x="x",
        y="y",
        color=what,
        tooltip=["image", what],
        x_title=x_title,
        y_title=y_title,
        color_title=what,
    )


def thumbnail(path: str) -> str:
    """A JPEG thumbnail of ``path``, written once (atomically) and reused: returned as a file, not a PIL image,
    because Gradio rewrites a PIL output's cache file in place, and two visitors getting the same thumbnail at
    once then read it half-written (the load bench saw it as truncated downloads)."""
    st = Path(path).stat()
    out = THUMBS / (hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:20] + ".jpg")
    if not out.is_file():
        THUMBS.mkdir(parents=True, exist_ok=True)
        existing = list(THUMBS.glob("*.jpg"))
        if len(existing) > MAX_THUMBS:
            for old in sorted(existing, key=lambda p: p.stat().st_mtime)[: len(existing) // 2]:
                old.unlink(missing_ok=True)
        image = load_image(path)
        image.thumbnail((THUMB, THUMB))
        write_atomic(out, lambda tmp: image.save(tmp, format="JPEG", quality=85))
    return str(out)


def search_handler(index: SearchIndex | None, served: Served, text: str, image, top_k: float, method: str):
    """(thumbnails with scores, status, map with the query) for a text or an image query (the image wins)."""
    if index is None:
        raise SearchError("Index some images first (step 1), then search them.")
    encoder = served.zero_shot().encoder
    query, kind = query_embedding(encoder, image if image is not None else (text or ""))
    hits = search(index, query, max(1, min(int(top_k), MAX_TOP_K)))
    gallery = []
    for h in hits:
        gallery.append((thumbnail(h.path), f"{h.rank}. {h.name} · {h.score:.3f}"))
    asked = "your image" if kind == "image" else f"“{' '.join(text.split())[:80]}”"
    status = f"Top {len(hits)} of {len(index)} images for {asked} (cosine similarity)."
    label = "query (image)" if kind == "image" else f"query: {' '.join(text.split())[:30]}"
    return gallery, status, map_points(index, query, method, label)


def build(served: Served) -> None:
    state = gr.State(None, time_to_live=STATE_TTL)
    sources = [UPLOADS] + ([DATASET] if served.settings.search_root else [])
    gr.Markdown(INTRO, elem_id="se-intro")
    gr.Markdown(
        f"**1. Index** up to {MAX_UPLOADS} of your images"
        + (" or the server's dataset" if served.settings.search_root else "")
        + ", then **2. search** them."
    )
    with gr.Row():
        with gr.Column(scale=2):
            source = gr.Radio(
                sources, value=UPLOADS, label="Search over", visible=len(sources) > 1, elem_id="se-source"
            )
            files = gr.File(
                label=f"Your images (up to {MAX_UPLOADS})",
                file_count="multiple",
                file_types=["image"],
                type="filepath",
                height=160,
                elem_id="se-files",
            )
            with gr.Row():
                threshold = gr.Slider(0.8, 1.0, value=DUPLICATE_THRESHOLD, step=0.001, label="Near-duplicate cosine ≥")
                method = gr.Radio(["PCA", "t-SNE"], value="PCA", label="Map", elem_id="se-method")
            index_btn = gr.Button("Index", variant="primary", elem_id="se-index")
            status = gr.Markdown("", elem_id="se-status")
            duplicates = gr.Markdown("", elem_id="se-duplicates")
        with gr.Column(scale=3):
            plot = gr.ScatterPlot(label="Map of the set", x="x", y="y", elem_id="se-map")
            gr.Markdown(MAP_CAPTION, elem_id="se-map-help")
    text, image, top_k, search_btn, found, results = _query_rows()

    def search_index(source=UPLOADS, files=None, threshold=DUPLICATE_THRESHOLD, method="PCA"):
        """Search, step 1: index your images (or the server's dataset), with near-duplicate pairs and a 2-D map.
        Args:
            source: "your uploads" or "the server's dataset" (when the server offers one).
            files: up to 200 images (with "your uploads").
            threshold: near-duplicate pairs are listed at this cosine similarity or above.
            method: the map's projection, PCA or t-SNE.
        """
        return index_handler(served, source, files, threshold, method)

    def search_query(index, text=None, image=None, top_k=8, method="PCA"):
        """Search, step 2: the indexed images most like a text or an image (an image wins over text).
        Args:
            text: what to look for, e.g. "a red car at night".
            image: an example image to search by.
            top_k: how many results.
            method: the map's projection, PCA or t-SNE.
        """
        return search_handler(index, served, text or "", image, top_k, method)

    check_first(index_btn.click, check_index, [source, files]).success(
        user_errors(search_index),
        [source, files, threshold, method],
        [state, status, duplicates, plot],
        api_name="search_index",
        **MODEL_QUEUE,
    )
    find, query_inputs = user_errors(search_query), [state, text, image, top_k, method]
    check_first(search_btn.click, check_query, [state, text, image]).success(
        find, query_inputs, [results, found, plot], api_name="search_query", **MODEL_QUEUE
    )
    check_first(text.submit, check_query, [state, text, image]).success(
        find, query_inputs, [results, found, plot], api_visibility="private", **MODEL_QUEUE
    )
    # the slider and the map choice act on the index already built: no re-indexing
    threshold.release(rethreshold, [state, threshold], [duplicates], api_visibility="private")
    method.change(user_errors(redraw), [state, method], [plot], api_visibility="private", **MODEL_QUEUE)


def _query_rows():
    """Step 2's controls and results."""
    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox(label="Search by text", placeholder="a red car at night", elem_id="se-text")
            image = image_upload(
                label="…or by example (an image wins over text)",
                sources=["upload", "clipboard"],
                height=200,
                elem_id="se-image",
            )
            top_k = gr.Slider(1, MAX_TOP_K, value=8, step=1, label="Results")
            search_btn = gr.Button("Search", variant="primary", elem_id="se-search")
        with gr.Column(scale=3):
            found = gr.Markdown("", elem_id="se-found")
            results = gr.Gallery(label="Results", columns=4, height=420, elem_id="se-results")
    return text, image, top_k, search_btn, found, results
