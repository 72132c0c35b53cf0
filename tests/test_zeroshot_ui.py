"""The zero-shot tab: handlers called as functions, then one real gradio_client call and one browser run."""

from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file

from clipdemo import hub_access
from clipdemo.serving import Served
from clipdemo.settings import Settings
from clipdemo.testing import launched, screenshot
from clipdemo.ui import zeroshot_tab
from clipdemo.ui.app import SESSION_CAPACITY, build_app, launch_kwargs
from clipdemo.ui.common import user_errors

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.jpg"))


@pytest.fixture
def served(tiny_clip, tmp_path):
    return Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "checkpoints"))


def test_handler_ranks_labels_and_draws_a_chart(served):
    label, chart, status = zeroshot_tab.zero_shot(served, [(str(EXAMPLES[0]), None)], "a, b, c", "imagenet-80", "", 2)
    assert len(label) == 2 and set(label) <= {"a", "b", "c"}
    assert chart["y_title"].startswith("probability (%)") and chart["y_lim"] == [0.0, 100.0]
    assert chart["caption"] == "top 2 of 3 labels." and list(chart["value"]["full label"]) == list(label)
    assert list(chart["value"]["score"]) == pytest.approx([100 * v for v in label.values()], abs=1e-3)
    assert "80 template(s)" in status and "cpu" in status and "✂️" not in status
    _, chart, status = zeroshot_tab.zero_shot(served, [str(EXAMPLES[0]), str(EXAMPLES[1])], "a, b, c", "photo", "", 5)
    assert chart["caption"] == "image 1 of 2: top 3 of 3 labels." and "- image 2: **" in status


def test_handler_custom_template_and_errors(served):
    handler = user_errors(lambda *a: zeroshot_tab.zero_shot(served, *a))
    label, _, _ = handler([str(EXAMPLES[0])], "a, b", "custom", "a drawing of a {}", 5)
    assert set(label) == {"a", "b"}
    with pytest.raises(gr.Error, match=r"custom template with \{\}"):
        handler([str(EXAMPLES[0])], "a, b", "custom", "no placeholder", 5)
    with pytest.raises(gr.Error, match="at least one image"):
        handler([], "a, b", "photo", "", 5)
    with pytest.raises(gr.Error, match="Too many images: 17"):
        handler([str(EXAMPLES[0])] * 17, "a, b", "photo", "", 5)


def test_a_click_decodes_each_upload_once_and_passes_it_along(served, monkeypatch):
    """Classify runs check -> zero_shot -> matrix (Show where: check_where -> where): the check decodes, the
    handlers after it take its Uploads; a call without them (the API) or with other files' decodes its own."""
    calls, load = [], zeroshot_tab.load_image
    monkeypatch.setattr(zeroshot_tab, "load_image", lambda source, **kw: calls.append(source) or load(source, **kw))
    paths = [str(EXAMPLES[0]), str(EXAMPLES[1])]
    click = (paths, "a, b, c", "photo", "", 3, None, "single", False, 0.0, zeroshot_tab.NO_COMPARE)
    uploads = zeroshot_tab.check(*click)
    assert uploads.paths == tuple(paths) and len(calls) == 2
    label, _, _ = zeroshot_tab.zero_shot(served, *click, uploads=uploads)
    heatmap, table = zeroshot_tab.matrix(served, *click, uploads=uploads)
    assert len(calls) == 2 and set(label) <= {"a", "b", "c"} and heatmap["visible"] and "2: " in table["value"]
    uploads = zeroshot_tab.check_where(paths, "a, b", "photo", "", None, "a")
    maps = zeroshot_tab.where(served, paths, "a, b", "photo", "", None, "a", uploads=uploads)
    assert len(calls) == 4 and len(maps) == 2
    zeroshot_tab.zero_shot(served, *click)  # an API call: no check step before it
    zeroshot_tab.zero_shot(served, paths[:1], *click[1:], uploads=uploads)  # another click's uploads are not used
    assert len(calls) == 7


def test_threshold_help_states_the_library_defaults():
    from clipdemo.zeroshot import DEFAULT_THRESHOLD, SIGMOID, SOFTMAX

    assert f"probability {DEFAULT_THRESHOLD[SIGMOID]:g}" in zeroshot_tab.THRESHOLD_INFO
    assert f"cosine {DEFAULT_THRESHOLD[SOFTMAX]:g}" in zeroshot_tab.THRESHOLD_INFO
    assert zeroshot_tab._threshold(SOFTMAX, True, 0) == DEFAULT_THRESHOLD[SOFTMAX]  # 0 on the slider: the default
    assert zeroshot_tab._threshold(SIGMOID, True, 0.3) == 0.3 and zeroshot_tab._threshold(SIGMOID, False, 0.3) is None


def test_status_names_a_local_model_without_its_server_path(tiny_clip, tmp_path):
    served = Served(Settings(model=str(tiny_clip), checkpoint_dir=tmp_path / "checkpoints"))
    status = zeroshot_tab.model_status(served)[0]
    assert status.startswith(f"Model: local model '{tiny_clip.name}' on cpu") and str(tiny_clip.parent) not in status
    broken = tmp_path / "private" / "broken-clip"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    served = Served(Settings(model=str(broken), checkpoint_dir=tmp_path / "checkpoints"))
    status = zeroshot_tab.model_status(served)[0]
    assert "Model folder 'broken-clip' could not be loaded" in status
    assert str(tmp_path) not in status


def test_status_says_plainly_when_the_model_cannot_be_had(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: False)
    served = Served(Settings(model="someone/unreachable-clip", checkpoint_dir=tmp_path))
    status = zeroshot_tab.model_status(served)[0]
    assert "someone/unreachable-clip" in status and "could not be loaded" in status


def test_app_serves_zero_shot_over_the_api(tiny_clip, tmp_path):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path)
    app = build_app(settings)
    with launched(app, **launch_kwargs(settings)) as url:
        assert app.state_holder.capacity == SESSION_CAPACITY  # per-session memory is bounded
        client = Client(url, verbose=False)
        label, _, status = client.predict(
            [{"image": handle_file(str(EXAMPLES[1])), "caption": None}],
            "temple, flower",
            "photo",
            "",
            5,
            "default",
            api_name="/zero_shot",
        )
        assert {c["label"] for c in label["confidences"]} == {"temple", "flower"}
        with pytest.raises(Exception, match="at least one label"):
            client.predict(
                [{"image": handle_file(str(EXAMPLES[1])), "caption": None}],
                ",,",
                "photo",
                "",
                5,
                "default",
                api_name="/zero_shot",
            )


def test_browser_upload_type_labels_read_ranking(tiny_clip, tmp_path, browser):
    settings = Settings(model=str(tiny_clip), checkpoint_dir=tmp_path)
    with launched(build_app(settings), **launch_kwargs(settings)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#zs-images input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#zs-images input[type=file]", [str(EXAMPLES[0])])
        page.fill("#zs-labels textarea", "a temple, a flower, a woman in uniform")
        page.wait_for_timeout(500)
        page.click("#zs-run")
        page.wait_for_function("() => document.querySelector('#zs-label')?.innerText.includes('%')", timeout=60_000)
        text = page.inner_text("#zs-label")
        assert "a temple" in text and "a flower" in text and "a woman in uniform" in text
        assert "Model:" in page.inner_text("#zs-status")
        assert screenshot(page, "zero_shot").stat().st_size > 10_000
        page.close()


def test_open_set_threshold_is_drawn_only_on_the_axis_it_applies_to(served):
    """A CLIP model's "none of these" is decided on the cosine: no line on the probability bars, and the title says
    the cosine that decided it. In several-labels mode the bars are cosines: the line is drawn there, every label
    stays on the chart (even when none clears it), and the status speaks of cosine similarity, not probability."""
    photo = [str(EXAMPLES[0])]
    _, chart, status = zeroshot_tab.zero_shot(served, photo, "a, b, c", "photo", "", 5, open_set=True, threshold=0.99)
    assert chart["y_title"] == "probability (%) · softmax"  # no threshold on this axis
    assert "none of these: best cosine" in chart["caption"] and "< 0.99" in chart["caption"]
    assert "no label reaches cosine 0.99" in status and len(chart["value"]) == 3  # the scores are still drawn
    label, chart, status = zeroshot_tab.zero_shot(
        served, photo, "a, b, c", "photo", "", 5, mode="multi", open_set=True, threshold=0.99
    )
    bars = chart["value"]
    assert list(bars["series"]) == ["below cosine 0.99"] * 3 + ["threshold 0.99"]  # all three labels, the line
    assert list(bars["score"])[-1] == 0.99 and list(bars["label"])[-1] == "threshold"  # on the cosine axis
    assert chart["y_title"] == "cosine similarity · threshold 0.99"
    assert "no label reaches cosine 0.99" in chart["caption"] and chart["colors_in_legend"] is None  # legend shown
    assert "reaches cosine 0.99" in status and "%" not in status and label == "none of these"  # no percentages


def test_several_labels_mode_shows_signed_cosines_ranked_by_them():
    """CLIP's several-labels score is the cosine clipped at 0: shown and ranked as the signed cosine instead, on a
    cosine axis that goes below 0, never as 0.0%."""
    import torch

    from clipdemo import charts
    from clipdemo.zeroshot import SOFTMAX, ZeroShotResult

    cos = torch.tensor([[-0.30, 0.10, -0.05]])
    result = ZeroShotResult(["a", "b", "c"], cos.clamp(min=0), cos, SOFTMAX, True, None, [])
    assert [(p.label, round(p.score, 2)) for p in result.bars()[0]] == [("b", 0.1), ("c", -0.05), ("a", -0.3)]
    chart = charts.bar_chart([("m", result)], None)
    assert list(chart.table["score"]) == [0.1, -0.05, -0.3] and chart.y_lim[0] < -0.3 < 0.1 < chart.y_lim[1]
    assert chart.y_title == "cosine similarity" and list(chart.table["score (text)"]) == ["+0.10", "−0.05", "−0.30"]
    assert zeroshot_tab._ranked_value(result, None) == "b (cosine +0.10)"  # the list widget speaks only in %
    html = charts.matrix_html([("m", result)], ["1: x.jpg"])
    assert "−0.30" in html and "0.0%" not in html


def test_label_cut_notes_only_when_the_label_itself_is_cut():
    """A byte-level model with a 32-token context (the shipped scratch CLIP): with the 80 templates an ordinary
    label is not "cut" (one sentence names the templates that are too long); a label too long for any template
    is, with how much."""
    from clipdemo.zeroshot import IMAGENET_TEMPLATES, TEMPLATE_SETS, cutting_templates, truncated_labels

    class Bytes:
        context_length = 32

        def token_lengths(self, texts):
            return [len(t.encode()) + 2 for t in texts]

    labels = ["cat", "a red car"]
    assert truncated_labels(Bytes(), labels, IMAGENET_TEMPLATES) == []
    too_long = cutting_templates(Bytes(), labels, IMAGENET_TEMPLATES)
    assert "a black and white photo of the {}." in too_long and "a photo of a {}." not in too_long
    assert cutting_templates(Bytes(), labels, TEMPLATE_SETS["photo"]) == ()  # one template: nothing to compare
    (cut,) = truncated_labels(Bytes(), ["cat", "a very long label about a red sports car"], TEMPLATE_SETS["photo"])
    assert cut.label.startswith("a very long") and cut.sentence().endswith("(24 of 56 dropped)")


def test_tables_escape_what_visitors_type_and_keep_file_names_whole():
    import torch

    from clipdemo import charts
    from clipdemo.zeroshot import SIGMOID, ZeroShotResult

    scores = torch.tensor([[0.9, 0.2]])
    result = ZeroShotResult(["<img src=x onerror=alert(1)>", "b" * 300], scores, scores, SIGMOID, False, None, [])
    html = charts.matrix_html([("m", result)], ["1: <x>.jpg"]) + charts.top_table_html([("m", result)], ["1"], 2)
    assert "<img" not in html and "&lt;img src=x" in html and "1: &lt;x&gt;.jpg" in html
    assert "white-space:nowrap" in html and "b" * 300 in html and ">" + "b" * 23 + "…<" in html  # full text on hover


def test_a_new_upload_replaces_the_gallery():
    """Gradio's gallery appends an upload to what it shows and sends the new files alone with its upload event."""
    event = gr.EventData(None, [{"image": {"path": "/tmp/b.png"}, "caption": None}, {"image": {"path": "/tmp/c.png"}}])
    assert zeroshot_tab.uploaded_only(event) == ["/tmp/b.png", "/tmp/c.png"]
