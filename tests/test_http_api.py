"""The HTTP API as a program meets it: every public endpoint called through ``gradio_client`` with only its required
data (every other input has a default), and README.md's gradio_client snippet run as written (found between its
``http-api-snippet`` markers; only the server address is swapped for this test's app)."""

from __future__ import annotations

import re

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from clipdemo.settings import REPO_ROOT, Settings
from clipdemo.testing import app_served, head_checkpoints

PHOTO = REPO_ROOT / "examples" / "flower.jpg"
SHAPE = REPO_ROOT / "examples" / "shapes" / "red_circle.png"
TOKEN = "s3cret-token"
GENERIC = re.compile(r"something went wrong|error was logged", re.IGNORECASE)


@pytest.fixture(scope="module")
def app(tiny_clip, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    head_checkpoints(root, tiny_clip, tmp_path_factory.mktemp("data"))
    settings = Settings(model=str(tiny_clip), checkpoint_dir=root, admin_token=TOKEN)
    with app_served(settings) as url:
        yield url


def required_data():
    """Per public endpoint, its required data and nothing else (a new endpoint needs a line here)."""
    photo, shape = handle_file(str(PHOTO)), handle_file(str(SHAPE))
    gallery = [{"image": photo, "caption": None}, {"image": shape, "caption": None}]
    return {
        "/zero_shot": dict(images=gallery),
        "/zero_shot_matrix": dict(images=gallery),
        "/relevancy": dict(images=gallery),
        "/cars_classify": dict(image=photo),
        "/pokemon": dict(image=shape),
        "/zero_shot_classify": dict(image=photo, labels="a flower, a car"),
        "/where_in_image": dict(image=photo, labels="a flower, a car"),
        "/classify_car": dict(image=photo),
        "/classify_pokemon": dict(image=shape),
        "/fewshot_teach": dict(class_1="flower", class_2="shape", photos_1=[photo], photos_2=[shape]),
        "/fewshot_classify": dict(image=photo),
        "/fewshot_download": dict(),
        "/search_index": dict(files=[photo, shape]),
        "/search_query": dict(text="a flower"),
        "/admin_status": dict(token=TOKEN),
        "/admin_versions": dict(token=TOKEN),
        "/admin_card": dict(token=TOKEN, version="shapes-v1"),
        "/admin_promote": dict(token=TOKEN, version="shapes-v1"),
        "/admin_promote_anyway": dict(token=TOKEN, version="shapes-v1"),
        "/admin_rollback": dict(token=TOKEN),
        "/admin_push": dict(token=TOKEN, version="shapes-v1"),
        "/admin_pull": dict(token=TOKEN),
        "/admin_cancel": dict(token=TOKEN),
    }


# Endpoints whose answer with nothing but the required data may be a refusal written for users (no Hub repo is
# configured, nothing to roll back to, no job to cancel); everything else must answer.
MAY_REFUSE = {"/admin_rollback", "/admin_push", "/admin_pull", "/admin_cancel"}
NOT_CALLED = {"/admin_start"}  # with its defaults it would start a training run: its defaults are checked instead


def test_every_public_endpoint_answers_with_only_its_required_data(app):
    client = Client(app, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    calls = required_data()
    no_inputs = {name for name, info in endpoints.items() if not info["parameters"]}  # gr.Markdown(fn) refreshers
    assert set(endpoints) == set(calls) | NOT_CALLED | no_inputs, "a public endpoint without a required-data call"
    for name in [n for n in endpoints if n not in calls and n not in NOT_CALLED]:
        calls[name] = {}
    for name, data in calls.items():
        required = {p["parameter_name"] for p in endpoints[name]["parameters"] if not p["parameter_has_default"]}
        assert required <= set(data), f"{name}: {required - set(data)} required but not given"
        try:
            result = client.predict(**data, api_name=name)
        except AppError as e:
            assert name in MAY_REFUSE and str(e).strip() and not GENERIC.search(str(e)), f"{name}: {e}"
            continue
        assert result is not None or name == "/admin_cancel", name
    start = {p["parameter_name"]: p for p in endpoints["/admin_start"]["parameters"]}
    assert [n for n, p in start.items() if not p["parameter_has_default"]] == ["token"], start
    client.close()


def test_tools_answer_structured_results(app):
    client = Client(app, verbose=False)
    ranked = client.predict(
        image=handle_file(str(PHOTO)), labels="a flower, a car, a cat", api_name="/zero_shot_classify"
    )
    scores = [p["score"] for p in ranked["predictions"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1, abs=1e-3)
    assert "warning" not in ranked  # the model asked for answered (tests/test_fallback.py: a stand-in)
    car = client.predict(image=handle_file(str(PHOTO)), top_k=2, api_name="/classify_car")
    assert len(car["predictions"]) == 2 and len(car["zero_shot"]) == 2 and isinstance(car["agree"], bool)
    shapes = client.predict(image=handle_file(str(SHAPE)), api_name="/classify_pokemon")
    assert len(shapes) == 5 and shapes[0]["score"] >= shapes[-1]["score"]
    client.close()


def readme_snippet() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- http-api-snippet -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its http-api-snippet"
    return match.group(1)


def test_readme_gradio_client_snippet_runs_as_written(app, monkeypatch, capsys):
    import gradio_client

    snippet = readme_snippet()
    assert 'Client("http://127.0.0.1:7860/")' in snippet
    monkeypatch.setattr(gradio_client, "Client", lambda src, **kw: Client(app, verbose=False, **kw))
    monkeypatch.chdir(REPO_ROOT)  # the snippet names images under examples/, as in the README's other commands
    exec(compile(snippet, "README.md", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= 2 and all(line.strip() for line in printed), printed


MALFORMED = {  # what callers send by mistake where a file (or a list of files) is expected
    "a bare path": str(PHOTO),
    "a list of bare paths": [str(PHOTO)],
    "a dict without a file": {"image": {"x": 1}},
    "a number": 7,
}


def test_malformed_file_inputs_are_one_sentence_and_no_traceback(app, capfd):
    """On every public endpoint, each input that takes a file, sent each malformed value: the caller gets one
    sentence about that input (never the generic 'raised an exception' nor 'went wrong on our side'), and the
    server's log holds no traceback."""
    client = Client(app, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    calls, checked = required_data(), 0
    for name, data in calls.items():
        for parameter in endpoints[name]["parameters"]:
            if "filepath" not in str(parameter.get("python_type", {}).get("type", "")):
                continue
            for what, value in MALFORMED.items():
                with pytest.raises(AppError) as answer:
                    client.predict(**{**data, parameter["parameter_name"]: value}, api_name=name)
                message = str(answer.value)
                assert not GENERIC.search(message) and "verbose error reporting" not in message, (name, what, message)
                assert len(message.splitlines()) == 1, (name, what, message)
                checked += 1
    assert checked >= 40  # every file input of every public endpoint
    assert "Traceback" not in "".join(capfd.readouterr())
