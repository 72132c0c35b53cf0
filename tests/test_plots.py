"""Charts: labels in any script drawn without missing glyphs, long labels shortened, confusion matrices and training
curves readable, a font cache written before the fonts were installed repaired, and the image x label matrix
marking each image's best label and "none of these"."""

import io
import json
import warnings

import pytest

from clipdemo.plots import confusion_figure, ranked_bars, training_curves, user_text_fonts
from clipdemo.zeroshot import Prediction

LABELS = ["猫", "a red sports car 🚗", "नमस्ते", "кошка", "مرحبا", "שלום", "สวัสดี", "Nidoran♀", "日本語"]


def render(fig) -> bytes:
    """PNG bytes; a glyph missing from every font in the chain fails the test."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return buf.getvalue()


def test_labels_in_any_script_are_drawn():
    # The fallback fonts come from packages.txt, which the README's test command installs.
    assert {"DejaVu Sans", "Droid Sans Fallback", "Symbola"} <= set(user_text_fonts())
    fig = ranked_bars([Prediction(label, 1 / len(LABELS)) for label in LABELS], title="image 1 of 2")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == LABELS[::-1]  # best on top
    assert render(fig).startswith(b"\x89PNG")


def test_long_labels_are_shortened_and_the_top_one_highlighted():
    fig = ranked_bars([Prediction("x" * 200, 0.7), Prediction("y", 0.3)])
    ax = fig.axes[0]
    assert max(len(t.get_text()) for t in ax.get_yticklabels()) <= 48
    assert ax.patches[-1].get_facecolor() != ax.patches[0].get_facecolor()
    assert [t.get_text() for t in ax.texts] == ["30.0%", "70.0%"]


@pytest.mark.parametrize("n", [3, 30])
def test_confusion_figure_names_classes_in_any_script(n):
    names = (LABELS * 4)[:n]
    matrix = [[(i == j) * 5 for j in range(n)] for i in range(n)]
    fig = confusion_figure(matrix, names)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == names
    render(fig)


def test_training_curves_plot_loss_and_accuracy():
    history = [{"step": s, "loss": 3.0 - s / 10, "epoch": 1 + s // 5} for s in range(10)]
    history += [{"epoch": 1, "val_acc": 0.4}, {"epoch": 2, "val_acc": 0.6}]
    fig = training_curves(history)
    loss_ax, acc_ax = fig.axes
    assert list(loss_ax.lines[0].get_ydata())[0] == 3.0
    assert list(acc_ax.lines[0].get_ydata()) == [40.0, 60.0]
    render(fig)


def test_confusion_counts_stay_readable_on_dark_cells():
    fig = confusion_figure([[8, 1], [0, 3]], ["a", "b"])
    colours = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colours == {"8": "white", "1": "black", "3": "black"}


def test_a_font_cache_written_before_the_fonts_were_installed_is_repaired(tmp_path):
    """`python app.py` on a fresh machine, then packages.txt's fonts installed, then the tests or the app again:
    matplotlib's cached font list lacks the new fonts. Charts must still find them, and the cache is fixed."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path)}

    def python(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    # the stale cache: only matplotlib's own bundled fonts, as on a machine with no system fonts yet
    python(
        "import matplotlib.font_manager as fm, matplotlib as mpl, pathlib\n"
        "m = fm.fontManager\n"
        "m.ttflist = [f for f in m.ttflist if 'mpl-data' in f.fname]\n"
        "fm.json_dump(m, pathlib.Path(mpl.get_cachedir(), f'fontlist-v{m.__version__}.json'))"
    )
    assert (
        python("import matplotlib.font_manager as fm; print('Symbola' in {f.name for f in fm.fontManager.ttflist})")
        == "False"
    )
    fonts = python(
        "import io, json, warnings\n"
        "from clipdemo.plots import ranked_bars, user_text_fonts\n"
        "from clipdemo.zeroshot import Prediction\n"
        "warnings.filterwarnings('error', message='.*missing from font')\n"
        "ranked_bars([Prediction('猫 🚗 नमस्ते', 1.0)]).savefig(io.BytesIO(), format='png')\n"
        "print(json.dumps(user_text_fonts()))"
    )
    assert {"Droid Sans Fallback", "Symbola", "Noto Sans Devanagari"} <= set(json.loads(fonts))
    # and written back: the next process starts with the fonts
    assert (
        python("import matplotlib.font_manager as fm; print('Symbola' in {f.name for f in fm.fontManager.ttflist})")
        == "True"
    )


def test_matrix_marks_best_and_none_of_these_and_draws_any_script():
    from clipdemo.plots import score_matrix

    fig = score_matrix(
        [[0.1, 0.7], [0.05, 0.02]], ["1: a.png", "2: b.png"], ["猫", "a red car 🚗"], "t", none_of_these=[False, True]
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1: a.png", "2: b.png  (none of these)"]
    assert ax.get_yticklabels()[1].get_color() == "#c44e52"
    outlined = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches]
    assert outlined == [(1, 0), (0, 1)]  # each row's best
    assert [t.get_text() for t in ax.texts] == ["10", "70", "5.0", "2.0"]
    render(fig)
    big = score_matrix([[0.5] * 20] * 16, [str(i) for i in range(16)], [f"l{i}" for i in range(20)])
    assert len(big.axes[0].texts) == 0 and len(big.axes[0].patches) == 16  # colour alone beyond 150 cells
