"""Bad inputs through the real HTTP API, plus the security checks a public Space needs.

One app is launched for the whole module (tiny model, the production ``launch_kwargs``, a 2 MB upload cap so
an over-limit file is cheap) and driven with ``gradio_client`` and plain HTTP. Every case must end in either a
correct answer (ranked labels, probabilities summing to ~1) or a short, clear message: a ``gr.Error`` reaches
the client as ``AppError`` carrying our text. A generic "Something went wrong", an empty message, a path or a
traceback in the message, or any other exception counts as a failure. The last test checks that the server
still answers a normal request correctly after all of it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import image_cases, launched
from clipdemo.ui.app import build_app, launch_kwargs

CASES_DIR = Path(tempfile.mkdtemp(prefix="clipdemo-bad-inputs-"))
IMAGE_CASES = [c for c in image_cases(CASES_DIR) if c.upload]
GOOD_IMAGE = next(c.path for c in IMAGE_CASES if c.name == "png_rgb")
LABELS = "cat, dog, a red sports car"
UPLOAD_CAP = 2 * 1024 * 1024  # Settings.max_file_size below

# Cases Gradio itself refuses before our code sees the file, with its own (clear, path-free) message.
REFUSED_BY_GRADIO = {
    "html": "Invalid file type",  # the Gallery's file_types=["image"] check, on the server
    "pdf": "Invalid file type",
    "eps": "Invalid file type",
    "tga": "Invalid file type",
    "file_over_20_mib": "maximum file size",  # gradio_client checks the cap before uploading; see the raw test
}
GENERIC = re.compile(r"something went wrong|error was logged|^none$|verbose error", re.IGNORECASE)
LEAKS = re.compile(r"Traceback|File \"|\.py\b|/tmp/|/home/|/root/|/work/|/etc/|/data/|site-packages|checkpoints/")


@pytest.fixture(scope="module")
def app(tiny_clip, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    checkpoints = root / "checkpoints"
    (checkpoints / "scratch-v1").mkdir(parents=True)
    (checkpoints / "scratch-v1" / "model.safetensors").write_bytes(b"not really weights")
    (checkpoints / "served.json").write_text("{}")
    data_root = root / "data"
    (data_root / "train" / "cat").mkdir(parents=True)
    (data_root / "train" / "cat" / "1.png").write_bytes(GOOD_IMAGE.read_bytes())
    settings = Settings(model=str(tiny_clip), checkpoint_dir=checkpoints, data_root=data_root, max_file_size="2mb")
    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        yield dict(
            url=url.rstrip("/"),
            settings=settings,
            model="default",
            model_dir=str(tiny_clip),
            checkpoints=checkpoints,
            data_root=data_root,
        )
    shutil.rmtree(CASES_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def client(app):
    return Client(app["url"], verbose=False)


def gallery(*paths):
    return [{"image": handle_file(str(p)), "caption": None} for p in paths]


def check_message(message: str, user_text: str = "") -> str:
    """A refusal must be short and ours: not empty, not the generic catch-all, no paths or tracebacks
    (the user's own text echoed back is fine)."""
    assert message.strip(), "empty error message"
    assert not GENERIC.search(message), f"unhandled error behind a generic message: {message!r}"
    assert not LEAKS.search(message.replace(user_text, "") if user_text else message), (
        f"error message leaks internals: {message!r}"
    )
    assert len(message) < 300, f"error message too long: {message!r}"
    return message


def outcome_of(job, user_text: str = ""):
    """("ok", label dict) or ("refused", message) for a submitted job; anything else fails the test."""
    try:
        label, _plot, status = job.result()
    except AppError as e:
        return "refused", check_message(str(e), user_text)
    assert "Model:" in status
    return "ok", label


def submit(client, app, images=(GOOD_IMAGE,), labels=LABELS, template="photo", custom="", top_k=5, model=None):
    return client.submit(
        gallery(*images), labels, template, custom, top_k, model or app["model"], api_name="/zero_shot"
    )


def zero_shot(client, app, user_text: str = "", **kwargs):
    return outcome_of(submit(client, app, **kwargs), user_text)


def assert_ranked(label, labels: list[str] | None = None, top_k: int = 5):
    """Ranked, probabilities in [0, 1], summing to ~1 when every label is shown; labels as expected."""
    confidences = label["confidences"]
    scores = [c["confidence"] for c in confidences]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert label["label"] == confidences[0]["label"]
    if labels is not None:
        assert {c["label"] for c in confidences} <= set(labels)
        if len(labels) <= top_k:
            assert sorted(c["label"] for c in confidences) == sorted(labels)
            assert sum(scores) == pytest.approx(1.0, abs=1e-3)
    assert sum(scores) <= 1.0 + 1e-3


# --- every uploadable image of the shared corpus --------------------------------------------------------


@pytest.fixture(scope="module")
def image_jobs(client, app):
    """Every corpus case submitted at once (the queue runs two at a time), so the suite stays fast, and waited for
    here; each parametrized test below then reads its own result.

    The 100-megapixel bomb is in Pillow's warning band (89 to 179 Mpx): Pillow warns, in the server's thread, while
    reading the header, and our pixel cap then refuses the file (``test_image_case`` checks the refusal). So the
    warnings are recorded here, while the server works, and only that one is allowed."""
    jobs = {}
    with warnings.catch_warnings(record=True) as caught:
        for case in IMAGE_CASES:
            try:
                jobs[case.name] = submit(client, app, images=[case.path])
            except ValueError as e:  # gradio_client checks the upload cap before sending anything
                jobs[case.name] = e
        for job in jobs.values():
            if not isinstance(job, ValueError):
                try:
                    job.result()
                except (AppError, ValueError):
                    pass  # a refusal by the app, or by gradio_client's upload cap: read by the test
    assert all(issubclass(w.category, Image.DecompressionBombWarning) for w in caught), [str(w.message) for w in caught]
    return jobs


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c.name for c in IMAGE_CASES])
def test_image_case(image_jobs, case):
    job = image_jobs[case.name]
    try:
        if isinstance(job, ValueError):
            raise job
        outcome, value = outcome_of(job)
    except ValueError as e:  # gradio_client checks the upload cap itself, before sending anything
        assert "maximum file size" in REFUSED_BY_GRADIO.get(case.name, ""), f"client refused {case.name}: {e}"
        assert "maximum file size" in str(e)
        return
    if case.ok:
        assert outcome == "ok", f"{case.name} ({case.expect}) was refused: {value}"
        assert_ranked(value, ["cat", "dog", "a red sports car"])
    else:
        assert outcome == "refused", f"{case.name} should be refused ({case.expect}), got {value}"
        assert REFUSED_BY_GRADIO.get(case.name, case.expect).lower() in value.lower(), value


def test_one_bad_image_among_good_ones_is_named_clearly(client, app):
    bad = next(c for c in IMAGE_CASES if c.name == "jpeg_truncated")
    outcome, message = zero_shot(client, app, images=[GOOD_IMAGE, bad.path, GOOD_IMAGE])
    assert outcome == "refused" and "truncated" in message


# --- text and other fields ---------------------------------------------------------------------------


def many(n: int) -> str:
    return ", ".join(f"label {i}" for i in range(n))


TEXT_CASES = [
    # id, kwargs, expected: list of labels (ok) or a message substring (refused)
    ("labels_empty", dict(labels=""), "at least one label"),
    ("labels_whitespace", dict(labels="   \n\t "), "at least one label"),
    ("labels_only_separators", dict(labels=",, ,\n,\r\n,"), "at least one label"),
    ("labels_101", dict(labels=many(101)), "Too many labels"),
    ("labels_100", dict(labels=many(100), top_k=20), [f"label {i}" for i in range(100)]),
    ("labels_text_over_50k", dict(labels="x" * 50_001), "too long"),
    ("label_10000_chars", dict(labels="a" * 10_000 + ", dog"), ["a" * 300, "dog"]),
    ("labels_emoji", dict(labels="🐱, 🐶, 🚗💨, 👩🏽‍🚀"), ["🐱", "🐶", "🚗💨", "👩🏽‍🚀"]),
    ("labels_chinese", dict(labels="猫, 狗, 红色跑车"), ["猫", "狗", "红色跑车"]),
    ("labels_arabic", dict(labels="قطة، كلب, سيارة رياضية حمراء"), ["قطة، كلب", "سيارة رياضية حمراء"]),
    ("labels_cyrillic", dict(labels="кошка, собака, красная машина"), ["кошка", "собака", "красная машина"]),
    (
        "labels_mixed_scripts_combining",
        dict(labels="cafe\u0301, Ελληνικά, हिन्दी, 日本語"),
        ["cafe\u0301", "Ελληνικά", "हिन्दी", "日本語"],
    ),
    ("labels_duplicates", dict(labels="cat, Cat, cat , dog,CAT,\ndog"), ["cat", "dog"]),
    ("labels_newlines", dict(labels="cat\ndog\r\nbird"), ["cat", "dog", "bird"]),
    ("labels_control_and_zero_width", dict(labels="c\x00at, do\u200bg, \x1b[31mred"), ["cat", "do\u200bg", "[31mred"]),
    (
        "labels_markup",
        dict(labels="<script>alert(1)</script>, **bold**, {}"),
        ["<script>alert(1)</script>", "**bold**", "{}"],
    ),
    ("labels_sql_and_format", dict(labels="'; DROP TABLE x; --, %s%n, {0}"), ["'; DROP TABLE x; --", "%s%n", "{0}"]),
    ("template_custom_without_braces", dict(template="custom", custom="a photo of a thing"), "with {}"),
    ("template_custom_empty", dict(template="custom", custom=""), "with {}"),
    (
        "template_custom_ok",
        dict(template="custom", custom="a blurry photo of a {}."),
        ["cat", "dog", "a red sports car"],
    ),
    (
        "template_custom_extra_braces",
        dict(template="custom", custom="a {} in {braces} {0} {{}}"),
        ["cat", "dog", "a red sports car"],
    ),
    ("template_custom_too_long", dict(template="custom", custom="a {} " + "x" * 400), "too long"),
    ("template_imagenet_80", dict(template="imagenet-80"), ["cat", "dog", "a red sports car"]),
    ("template_cars_8", dict(template="cars-8"), ["cat", "dog", "a red sports car"]),
    ("template_unknown", dict(template="../../etc/passwd"), "not in the list of choices|Unknown template"),
    ("images_none", dict(images=()), "at least one image"),
    ("images_16", dict(images=[GOOD_IMAGE] * 16), ["cat", "dog", "a red sports car"]),
    ("images_17", dict(images=[GOOD_IMAGE] * 17), "Too many images"),
    ("top_k_0", dict(top_k=0), "minimum"),
    ("top_k_negative", dict(top_k=-5), "minimum"),
    ("top_k_1000", dict(top_k=1000), "maximum"),
    ("top_k_fraction", dict(top_k=1.5), ["cat", "dog", "a red sports car"]),
]


@pytest.mark.parametrize("kwargs, expected", [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_text_case(client, app, kwargs, expected):
    echoed = str(kwargs.get("template", "")) if kwargs.get("template") not in (None, "custom") else ""
    outcome, value = zero_shot(client, app, user_text=echoed, **kwargs)
    if isinstance(expected, str):
        assert outcome == "refused", f"should be refused ({expected}), got {value}"
        assert re.search(expected, value, re.IGNORECASE), value
    else:
        assert outcome == "ok", f"refused: {value}"
        top_k = int(kwargs.get("top_k", 5))
        assert_ranked(value, expected, top_k=top_k)
        if expected is not None and len(expected) > top_k:
            assert len(value["confidences"]) == top_k


@pytest.mark.parametrize("model", ["/etc", "someone/evil-clip", "checkpoints"], ids=["etc", "hub_id", "checkpoint_dir"])
def test_model_outside_choices_is_refused(client, app, model):
    model = str(app["checkpoints"]) if model == "checkpoints" else model
    with pytest.raises(AppError, match="not in the list of choices|not one of this app's models"):
        submit(client, app, model=model).result()


def test_model_choices_do_not_expose_server_paths(client, app):
    config = httpx.get(f"{app['url']}/config", timeout=30).text
    assert app["model_dir"] not in config and str(app["checkpoints"]) not in config
    with pytest.raises(AppError) as refused:
        submit(client, app, model="/etc").result()
    check_message(str(refused.value), "/etc")


# --- upload limit, served paths, monitoring, crafted payloads ----------------------------------------------


def test_upload_over_the_limit_is_refused_by_the_server_and_it_keeps_answering(client, app):
    big = CASES_DIR / "over_cap.png"
    with open(big, "wb") as f:
        f.write(GOOD_IMAGE.read_bytes())
        f.truncate(UPLOAD_CAP + 1)
    response = httpx.post(
        f"{app['url']}/gradio_api/upload", files={"files": ("over_cap.png", big.read_bytes(), "image/png")}, timeout=60
    )
    assert response.status_code == 413, response.text[:200]
    assert str(CASES_DIR) not in response.text
    outcome, label = zero_shot(client, app)
    assert outcome == "ok"
    assert_ranked(label, ["cat", "dog", "a red sports car"])


def served_paths(app) -> dict[str, Path]:
    return {
        "checkpoint_weights": app["checkpoints"] / "scratch-v1" / "model.safetensors",
        "served_json": app["checkpoints"] / "served.json",
        "data_root_image": app["data_root"] / "train" / "cat" / "1.png",
        "model_weights": Path(app["model_dir"]) / "model.safetensors",
        "model_config": Path(app["model_dir"]) / "config.json",
        "requirements": REPO_ROOT / "requirements.txt",
        "settings_source": REPO_ROOT / "clipdemo" / "settings.py",
        "etc_passwd": Path("/etc/passwd"),
        "proc_environ": Path("/proc/self/environ"),
    }


@pytest.mark.parametrize("name", list(served_paths(dict(checkpoints=Path("c"), data_root=Path("d"), model_dir="m"))))
def test_gradio_never_serves_private_files(app, name):
    path = served_paths(app)[name]
    for route in ("/gradio_api/file=", "/file="):
        response = httpx.get(f"{app['url']}{route}{path}", timeout=30)
        assert response.status_code in (403, 404), (route, response.status_code)
        assert "root:x:0:0" not in response.text
        if path.is_file() and path.stat().st_size > 0:
            assert response.content != path.read_bytes()


@pytest.mark.parametrize(
    "suffix",
    ["../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "/tmp/gradio/../../etc/passwd"],
)
def test_path_traversal_is_refused(app, suffix):
    response = httpx.get(f"{app['url']}/gradio_api/file={suffix}", timeout=30)
    assert response.status_code in (400, 403, 404), response.status_code
    assert "root:x:0:0" not in response.text


@pytest.mark.parametrize("route", ["/monitoring", "/monitoring/summary", "/gradio_api/monitoring"])
def test_monitoring_is_not_served(app, route):
    response = httpx.get(f"{app['url']}{route}", timeout=30)
    assert response.status_code in (403, 404), response.status_code


def raw_call(app, data) -> str:
    """The event stream of one call made with plain HTTP (what a hand-written client can send)."""
    response = httpx.post(f"{app['url']}/gradio_api/call/zero_shot", json={"data": data}, timeout=30)
    if response.status_code != 200:
        assert response.status_code < 500, response.text[:200]
        return response.text
    event_id = response.json()["event_id"]
    stream = httpx.get(f"{app['url']}/gradio_api/call/zero_shot/{event_id}", timeout=120)
    assert stream.status_code < 500
    return stream.text


@pytest.mark.parametrize("target", ["etc_passwd", "checkpoint_weights", "model_weights", "data_root_image"])
def test_crafted_file_reference_outside_uploads_is_refused(app, target):
    """A payload pointing at a server file instead of an upload must not reach the model or leak content."""
    path = str(served_paths(app)[target])
    image = {"image": {"path": path, "meta": {"_type": "gradio.FileData"}}, "caption": None}
    text = raw_call(app, [[image], LABELS, "photo", "", 5, app["model"]])
    assert "event: error" in text and "confidences" not in text
    assert "root:x:0:0" not in text


def test_crafted_url_reference_is_not_fetched(app):
    image = {
        "image": {"path": "x.png", "url": "http://127.0.0.1:9/x.png", "meta": {"_type": "gradio.FileData"}},
        "caption": None,
    }
    text = raw_call(app, [[image], LABELS, "photo", "", 5, app["model"]])
    assert "event: error" in text and "confidences" not in text


@pytest.mark.parametrize(
    "data",
    [[], [None] * 6, ["not a list", LABELS, "photo", "", 5, None]],
    ids=["no_inputs", "all_none", "gallery_not_a_list"],
)
def test_malformed_payloads_get_an_error_event_not_a_5xx(app, data):
    assert "event: error" in raw_call(app, data)


@pytest.mark.parametrize(
    "name, body",
    [
        ("page.html", b"<html><script>alert(document.cookie)</script></html>"),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ],
)
def test_uploaded_markup_is_served_back_as_a_download_not_a_page(app, name, body):
    """An uploaded file can be fetched back from the cache; it must never render as HTML/SVG in our origin."""
    uploaded = httpx.post(f"{app['url']}/gradio_api/upload", files={"files": (name, body, "text/html")}, timeout=30)
    assert uploaded.status_code == 200
    response = httpx.get(f"{app['url']}/gradio_api/file={uploaded.json()[0]}", timeout=30)
    content_type = response.headers.get("content-type", "")
    assert "html" not in content_type and "svg" not in content_type
    assert response.headers.get("content-disposition", "").startswith("attachment")


def test_no_pickle_loading_in_the_library():
    """Weights are safetensors only: no pickle, no torch.load without weights_only=True."""
    offenders = []
    for path in (REPO_ROOT / "clipdemo").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\bimport pickle\b|\bpickle\.loads?\(|\bdill\b|\bjoblib\.load\(", code) or (
                "torch.load(" in code and "weights_only=True" not in code
            ):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders


# --- and afterwards ---------------------------------------------------------------------------------------


def test_server_still_answers_normally_afterwards(client, app):
    outcome, label = zero_shot(client, app, labels="a temple, a flower, a woman in uniform", template="imagenet-80")
    assert outcome == "ok"
    assert_ranked(label, ["a temple", "a flower", "a woman in uniform"])
    assert httpx.get(f"{app['url']}/gradio_api/info", timeout=30).status_code == 200
