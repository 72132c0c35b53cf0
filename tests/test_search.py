"""Search: through the CLI (text and image queries, near-duplicates, skipped files), the library (near-duplicates,
the 2-D map, limits), the tab's handlers (uploads and the Admin-configured folder), and both new tabs through the
HTTP API with gradio_client."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from clipdemo.cli import main
from clipdemo.encoders import load_encoder
from clipdemo.search import SearchError, build_index, groups, index_folder, map_2d, near_duplicates, query_embedding
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import colour_folder, colour_image, launched
from clipdemo.ui import search_tab

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("apple", "leaf", "sky")


@pytest.fixture
def folder(tmp_path):
    """12 readable images in class folders, a copy of one, and 3 junk files (text, empty, truncated PNG)."""
    root = colour_folder(tmp_path / "photos", CLASSES, 4)
    shutil.copy(root / "sky" / "sky_2.png", root / "sky" / "copy of sky_2.png")
    (root / "notes.txt").write_text("not an image")
    (root / "apple" / "empty.jpg").write_bytes(b"")
    (root / "leaf" / "cut.png").write_bytes((root / "leaf" / "leaf_0.png").read_bytes()[:100])
    return root


def run_search(capsys, monkeypatch, tmp_path, *args) -> dict:
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "ckpts"))
    assert main(["search", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_image_query_ranks_itself_first(tiny_clip, folder, tmp_path, capsys, monkeypatch):
    query = folder / "leaf" / "leaf_1.png"
    out = run_search(
        capsys,
        monkeypatch,
        tmp_path,
        "--model",
        str(tiny_clip),
        "--images",
        str(folder),
        "--query",
        str(query),
        "--top-k",
        "3",
    )
    assert out["kind"] == "image" and out["results"][0]["path"] == str(query) and out["results"][0]["score"] >= 0.999
    assert len(out["results"]) == 3 and out["images"] == 13 and out["skipped"] == 3


def test_cli_text_query_returns_every_readable_image_once_sorted(tiny_clip, folder, tmp_path, capsys, monkeypatch):
    out = run_search(
        capsys, monkeypatch, tmp_path, "--model", str(tiny_clip), "--images", str(folder), "--query", "a red apple"
    )
    paths = [r["path"] for r in out["results"]]
    readable = sorted(str(p) for p in folder.rglob("*.png") if p.name != "cut.png")
    assert out["kind"] == "text" and sorted(paths) == readable and len(set(paths)) == len(paths) == 13
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True) and [r["rank"] for r in out["results"]] == list(range(1, 14))
    assert out["skipped"] == 3 and {u.split(":")[0] for u in out["unreadable"]} == {"notes.txt", "empty.jpg", "cut.png"}
    # the second run reads the cached embeddings: same answer
    again = run_search(
        capsys, monkeypatch, tmp_path, "--model", str(tiny_clip), "--images", str(folder), "--query", "a red apple"
    )
    assert again["results"] == out["results"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--query", "  "], "Type what to look for"),
        (["--query", "x", "--top-k", "0"], "--top-k must be at least 1"),
        (["--images", "/nonexistent/photos", "--query", "x"], "is not a folder"),
    ],
)
def test_cli_errors_are_one_line(tiny_clip, folder, capsys, args, message):
    base = {"--images": str(folder)}
    merged = sum(([k, v] for k, v in {**base, **dict(zip(args[::2], args[1::2]))}.items()), [])
    assert main(["search", "--model", str(tiny_clip), *merged]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_limits_and_all_junk(tiny_clip, tmp_path):
    encoder = load_encoder(str(tiny_clip))
    with pytest.raises(SearchError, match="Too many images: 500 given, at most 200"):
        build_index(encoder, [f"{i}.png" for i in range(500)])
    with pytest.raises(SearchError, match="Add at least one image"):
        build_index(encoder, [])
    junk = tmp_path / "a.txt"
    junk.write_text("x")
    with pytest.raises(SearchError, match="None of the 1 file"):
        build_index(encoder, [junk])


def test_near_duplicates_groups_and_map(tiny_clip, folder):
    encoder = load_encoder(str(tiny_clip))
    index = index_folder(encoder, folder)
    pairs = near_duplicates(index, 0.99999)  # the tiny random CLIP puts same-colour images at 0.998-0.99995
    assert [(index.names[i], index.names[j]) for i, j, _ in pairs] == [("sky/copy of sky_2.png", "sky/sky_2.png")]
    names, what = groups(index)
    assert what == "label" and set(names) == set(CLASSES)
    query, _ = query_embedding(encoder, str(folder / "sky" / "sky_0.png"))
    xy, qxy = map_2d(index, query)
    assert xy.shape == (13, 2) and qxy.shape == (2,)
    assert abs(qxy - xy[index.names.index("sky/sky_0.png")]).max() < 1e-4  # PCA puts the query on its own image
    xy, qxy = map_2d(index, query, "tsne")
    assert xy.shape == (13, 2) and qxy.shape == (2,)
    flat = build_index(
        encoder, [folder / "apple" / "apple_0.png", folder / "sky" / "sky_0.png", folder / "leaf" / "leaf_0.png"]
    )
    assert groups(flat)[1] == "cluster"


# --- the tab's handlers --------------------------------------------------------------------------------------


def rows(plot) -> list[dict]:
    """A ``gr.ScatterPlot``'s points as dicts."""
    return [dict(zip(plot.value["columns"], row)) for row in plot.value["data"]]


def test_handlers_uploads_then_text_and_image_search(tiny_clip, folder, tmp_path):
    served = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "ckpts"))
    uploads = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    index, status, duplicates, figure = search_tab.index_handler(served, search_tab.UPLOADS, uploads, 0.99999, "PCA")
    assert (
        "Indexed 13 image(s)" in status and "Skipped 3 unreadable" in status and "1 near-duplicate pair" in duplicates
    )
    points = rows(figure)  # the map: one point per image, named (shown on hover), by look-alike cluster
    assert figure.color == "cluster" and sorted(p["image"] for p in points[:-1]) == sorted(index.names)
    assert points[-1]["cluster"] == search_tab.QUERY and points[-1]["x"] is None  # no query yet: off the axes
    assert "image" in figure.tooltip and "differ most" in figure.x_title  # axes said in words
    gallery, found, figure = search_tab.search_handler(index, served, "", str(folder / "leaf" / "leaf_3.png"), 4, "PCA")
    assert len(gallery) == 4 and gallery[0][1].startswith("1. leaf_3.png · 1.000") and "your image" in found
    assert (
        rows(figure)[-1]["cluster"] == "★ query" and rows(figure)[-1]["image"] == "query (image)"
    )  # the query marked on the same map
    # the duplicate slider and the map choice act on the index already built, without re-indexing
    assert "1 near-duplicate pair" in search_tab.rethreshold(index, 0.99999)
    assert "1 near-duplicate pair" not in search_tab.rethreshold(index, 0.99) and search_tab.rethreshold(None, 0.9)
    assert len(search_tab.redraw(index, "t-SNE").value["data"]) == len(index) + 1
    for mistake, message in (
        (lambda: search_tab.check_index(search_tab.UPLOADS, []), "Add at least one image"),
        (lambda: search_tab.check_query(None, "x", None), "Index some images first"),
        (lambda: search_tab.check_query(index, "  ", None), "Type what to look for"),
    ):
        with pytest.raises(SearchError, match=message):
            mistake()
    gallery, found, _ = search_tab.search_handler(index, served, "green leaf", None, 50, "t-SNE")
    assert len(gallery) == 13 and "“green leaf”" in found
    with pytest.raises(SearchError, match="Index some images first"):
        search_tab.search_handler(None, served, "x", None, 5, "PCA")


def test_configured_dataset_folder_is_searchable_without_showing_server_paths(tiny_clip, folder, tmp_path):
    served = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "ckpts", search_root=folder))
    index, status, _, figure = search_tab.index_handler(served, search_tab.DATASET, None, 0.95, "PCA")
    assert "Indexed 13 image(s)" in status and figure.color == "label"
    assert any((tmp_path / "ckpts" / ".cache").glob("features-*.safetensors"))  # embeddings cached on disk
    gallery, found, _ = search_tab.search_handler(index, served, "sky", None, 13, "PCA")
    assert all(str(tmp_path) not in caption for _, caption in gallery)
    no_root = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "ckpts"))
    with pytest.raises(SearchError, match="no dataset to search"):
        search_tab.index_handler(no_root, search_tab.DATASET, None, 0.95, "PCA")


# --- both tabs through the HTTP API ----------------------------------------------------------------------------


def test_http_api_teach_classify_download_and_search(tiny_clip, folder, tmp_path):
    from gradio_client import Client, handle_file

    from clipdemo.ui.app import build_app, launch_kwargs

    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "ckpts")
    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        files = [[handle_file(str(p)) for p in sorted((folder / c).glob(f"{c}_*.png"))] for c in CLASSES]
        status = client.predict(None, *CLASSES, "", *files, None, api_name="/fewshot_teach")
        assert "Taught 3 classes on 12 images" in status[0]
        query = tmp_path / "q.png"
        colour_image("apple", 31337).save(query)
        blend, _, verdict = client.predict(handle_file(str(query)), 1.0, api_name="/fewshot_classify")
        assert blend["label"] == "apple", verdict
        archive = client.predict(api_name="/fewshot_download")
        with zipfile.ZipFile(archive) as z:
            assert "fewshot-head/weights.safetensors" in z.namelist()
        uploads = [handle_file(str(p)) for p in sorted(folder.rglob("*.png")) if p.name != "cut.png"]
        status, duplicates, _ = client.predict(search_tab.UPLOADS, uploads, 0.999, "PCA", api_name="/search_index")
        assert "Indexed 13 image(s)" in status
        gallery, found, _ = client.predict(
            "", handle_file(str(folder / "sky" / "sky_1.png")), 3, "PCA", api_name="/search_query"
        )
        assert len(gallery) == 3 and gallery[0]["caption"].startswith("1. sky_1.png")
        client.close()
    assert not any(Path(settings.checkpoint_dir).glob("cars-head*"))


def test_search_root_setting_is_read_from_the_environment_and_never_served(monkeypatch, tmp_path):
    from clipdemo.ui.app import launch_kwargs

    monkeypatch.setenv("CLIPDEMO_SEARCH_ROOT", str(tmp_path / "dataset"))
    settings = Settings.from_env()
    assert settings.search_root == tmp_path / "dataset"
    assert str(tmp_path / "dataset") in launch_kwargs(settings)["blocked_paths"]
