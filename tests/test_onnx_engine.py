"""The ONNX Runtime engine: parity with PyTorch, the export cache across processes, and every way it can fail
falling back to PyTorch with one log line."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipdemo import cli, onnx_cache, onnx_engine
from clipdemo.devices import pick_precision
from clipdemo.encoders import HFCLIPEncoder, forget_encoder, load_encoder
from clipdemo.errors import ModelUnavailable
from clipdemo.relevancy import relevancy
from clipdemo.scratch.encoder import ScratchEncoder
from clipdemo.zeroshot import EmbeddingCache, model_key

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "scratch" / "shapes-v1"
IMAGES = [
    Image.effect_noise((64, 48), 40).convert("RGB"),
    Image.new("RGB", (30, 50), "orange"),
    Image.linear_gradient("L").convert("RGB"),
]
# longer than the 77-token context first, then lengths that pad differently in one batch
TEXTS = ["Flabébé ♀ " * 30, "a photo of a cat", "dog", "a photo of a red sports car", "x"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh export cache (``CLIPDEMO_CHECKPOINT_DIR/.cache/onnx``) for this test."""
    monkeypatch.setenv("CLIPDEMO_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints" / ".cache" / "onnx"


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def models_in(cache: Path) -> list[str]:
    """The cached models the engine would load (hidden temporaries are never loaded)."""
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".") and (p / "model.onnx").is_file())


@pytest.mark.parametrize(
    "precision, engine", [(p, e) for p in ("auto", "fp32", "bf16", "int8") for e in ("auto", "torch", "onnx")]
)
def test_the_cli_preloads_what_the_encoder_will_ask_for(precision, engine, monkeypatch):
    """The preload (before torch is imported) follows the encoder's rule for every setting: the same precision,
    and nothing where PyTorch will run the model."""
    monkeypatch.setenv("CLIPDEMO_PRECISION", precision)
    monkeypatch.setenv("CLIPDEMO_ENGINE", engine)
    asked = []
    monkeypatch.setattr(onnx_cache, "preload", lambda kind, spec, precision: asked.append(precision))
    onnx_cache.preload_for_cpu("some/model")
    cpu = torch.device("cpu")
    wanted, runs_in = onnx_engine.planned(cpu, pick_precision(cpu, int8=True))
    assert asked == ([wanted] if runs_in == "onnx" else [])
    onnx_cache.preload_for_cpu("some/model", device="cuda")  # PyTorch runs it there
    assert len(asked) <= 1


def engine_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "clipdemo.onnx_engine" and r.levelno >= logging.WARNING]


def test_auto_picks_onnx_runtime_on_cpus_and_pytorch_on_gpus(monkeypatch, caplog):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert onnx_engine.pick_engine(cpu) == "onnx" and onnx_engine.pick_engine(gpu) == "torch"
    assert onnx_engine.pick_engine(cpu, auto_on_cpu="torch") == "torch"  # a back end where it doesn't pay
    monkeypatch.setenv("CLIPDEMO_ENGINE", "torch")
    assert onnx_engine.pick_engine(cpu) == "torch"
    assert onnx_engine.pick_engine(gpu, "onnx") == "torch" and "CPUs only" in caplog.text
    with pytest.raises(ValueError, match="auto, torch, onnx"):
        onnx_engine.pick_engine(cpu, "tensorrt")


def test_fp32_embeddings_equal_pytorch(tiny_clip, cache):
    onnx, torch_ = HFCLIPEncoder(str(tiny_clip)), HFCLIPEncoder(str(tiny_clip), engine="torch")
    assert (onnx.engine, onnx.precision, torch_.engine) == ("onnx", "fp32", "torch")
    assert "ONNX Runtime" in onnx.describe() and "PyTorch" in torch_.describe()
    assert cosines(onnx.encode_images(IMAGES), torch_.encode_images(IMAGES)).min() >= 0.99999
    assert cosines(onnx.encode_texts(TEXTS), torch_.encode_texts(TEXTS)).min() >= 0.99999
    assert cosines(onnx.encode_images(IMAGES[:1]), torch_.encode_images(IMAGES[:1])).min() >= 0.99999  # batch 1
    assert onnx.encode_texts([]).shape == (0, torch_.encode_texts(TEXTS).shape[1])
    assert model_key(onnx) != model_key(torch_)  # zero-shot's embedding caches keep the engines apart
    assert len(models_in(cache)) == 2  # both towers


def test_default_encoder_on_cpu_uses_onnx_runtime(tiny_clip):
    assert load_encoder(str(tiny_clip)).engine == "onnx"


def test_int8_on_request(tiny_clip, cache, caplog):
    int8, fp32 = HFCLIPEncoder(str(tiny_clip), precision="int8"), HFCLIPEncoder(str(tiny_clip), engine="torch")
    assert (int8.engine, int8.precision) == ("onnx", "int8") and "int8" in int8.describe()
    image_cos, text_cos = (
        cosines(int8.encode_images(IMAGES), fp32.encode_images(IMAGES)),
        cosines(int8.encode_texts(TEXTS), fp32.encode_texts(TEXTS)),
    )
    assert 0.99 < image_cos.min() and 0.99 < text_cos.min() and image_cos.max() < 0.999999  # int8 really ran
    assert model_key(int8) != model_key(HFCLIPEncoder(str(tiny_clip)))
    # int8 exists only in ONNX Runtime: with PyTorch asked for, it is fp32, said once
    forced = HFCLIPEncoder(str(tiny_clip), precision="int8", engine="torch")
    assert (forced.engine, forced.precision) == ("torch", "fp32")
    assert any("int8 runs only in the ONNX engine" in m for m in engine_logs(caplog))


def test_scratch_checkpoint_stays_in_pytorch_unless_asked(cache):
    auto, onnx = ScratchEncoder(SHIPPED), ScratchEncoder(SHIPPED, engine="onnx")
    assert (auto.engine, onnx.engine) == ("torch", "onnx") and models_in(cache)
    texts = [t.format(c) for t in auto.templates[:2] for c in ("a red triangle", "a blue circle", "Nidoran♀")]
    assert cosines(onnx.encode_images(IMAGES), auto.encode_images(IMAGES)).min() >= 0.99999
    assert cosines(onnx.encode_texts(texts), auto.encode_texts(texts)).min() >= 0.99999
    int8 = ScratchEncoder(SHIPPED, precision="int8")  # int8 takes the ONNX engine by itself
    assert (int8.engine, int8.precision) == ("onnx", "int8")


def test_export_cache_is_reused_by_the_next_process(tiny_clip, tmp_path, cache):
    """Exported here, loaded by the CLI in another process (the engine is its default): of the two towers it
    exports only the one whose model was removed from the cache."""
    assert HFCLIPEncoder(str(tiny_clip))._model is None  # exported, then the PyTorch model was dropped
    image_model, text_model = (cache / name / "model.onnx" for name in models_in(cache))
    assert image_model.parent.name.startswith("hf-clip-image") and text_model.parent.name.startswith("hf-clip-text")
    exported = image_model.stat().st_mtime_ns
    text_model.unlink()
    image = tmp_path / "cat.png"
    IMAGES[0].save(image)
    cmd = [sys.executable, "-m", "clipdemo", "zero-shot", "--model", str(tiny_clip), "--labels", "cat,dog", str(image)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    assert image_model.stat().st_mtime_ns == exported and text_model.is_file()


def test_missing_onnxruntime_falls_back_to_pytorch(tiny_clip, cache, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    encoder = HFCLIPEncoder(str(tiny_clip), engine="onnx")
    assert encoder.engine == "torch" and encoder.encode_images(IMAGES).shape[0] == 3
    assert len(engine_logs(caplog)) == 1 and "running it in PyTorch" in engine_logs(caplog)[0]
    assert "\n" not in engine_logs(caplog)[0] and not models_in(cache)


def test_failed_export_falls_back_to_pytorch(tiny_clip, cache, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: aten::something_new\nand a long trace")

    monkeypatch.setattr(torch.onnx, "export", broken)
    encoder = HFCLIPEncoder(str(tiny_clip))
    assert encoder.engine == "torch" and encoder.encode_texts(TEXTS).shape[0] == len(TEXTS)
    assert engine_logs(caplog) == [
        f"ONNX engine unavailable for {tiny_clip} (Unsupported: aten::something_new): running it in PyTorch"
    ]
    assert not models_in(cache) and not list(cache.iterdir())  # no temporary left behind either


def test_corrupt_cached_model_is_exported_again(tiny_clip, cache, monkeypatch, caplog):
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch").encode_images(IMAGES)
    HFCLIPEncoder(str(tiny_clip))
    image_model = next(cache / name / "model.onnx" for name in models_in(cache) if name.startswith("hf-clip-image"))
    image_model.write_bytes(image_model.read_bytes()[:1000])  # truncated, as by a disk that filled up
    encoder = HFCLIPEncoder(str(tiny_clip))
    assert encoder.engine == "onnx" and cosines(encoder.encode_images(IMAGES), reference).min() >= 0.99999
    assert any("does not load" in m for m in engine_logs(caplog))
    # corrupt again, and this time the export fails too: PyTorch, still no error
    image_model.write_bytes(b"not a model")
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no")))
    assert HFCLIPEncoder(str(tiny_clip)).engine == "torch"


KILLED_EXPORT = """
import sys, time
from pathlib import Path
from clipdemo import cli, onnx_cache, onnx_engine

def export(path):
    with open(path, "wb") as f:
        f.write(b"half a model")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

onnx_engine.cached_session("linear", "weights", "fp32", export)
"""


def linear_export():
    return onnx_engine._exporter(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), {"x": {0: "batch"}})


def test_sigkill_during_export_leaves_no_model_in_the_cache(cache):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_EXPORT], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert models_in(cache) == []  # only the hidden temporary folder, which nothing loads
    (leftover,) = list(cache.iterdir())
    assert leftover.name.startswith(".") and leftover.name.endswith(".partial")
    # the next process exports afresh; a temporary older than any export is cleared on the way
    old = time.time() - 2 * onnx_engine.STALE_TEMP_SECONDS
    os.utime(leftover, (old, old))
    session = onnx_engine.cached_session("linear", "weights", "fp32", linear_export())
    assert session.run(None, {"x": [[1.0, 2.0, 3.0, 4.0]]})[0].shape == (1, 2)
    assert [p.name for p in cache.iterdir()] == models_in(cache) and len(models_in(cache)) == 1


def test_cache_key_separates_weights_precision_and_tower():
    key = onnx_cache.cache_key
    keys = {
        key("hf-clip-image", "w1", "fp32"),
        key("hf-clip-image", "w1", "int8"),
        key("hf-clip-image", "w2", "fp32"),
        key("hf-clip-text", "w1", "fp32"),
    }
    assert len(keys) == 4 and key("hf-clip-image", "w1", "fp32") == key("hf-clip-image", "w1", "fp32")


# --- a lean process, and the switch after a background export ---------------------------------------------------

LEAN_LOAD = """
import sys, json
from PIL import Image
from clipdemo.encoders import load_encoder

encoder = load_encoder(sys.argv[1])
images = [Image.effect_noise((64, 48), 40).convert("RGB"), Image.new("RGB", (30, 50), "orange")]
print(json.dumps({
    "engine": encoder.engine,
    "model_built": encoder._model is not None,
    "modules": [m for m in ("transformers", "torch._dynamo") if m in sys.modules],
    "images": encoder.encode_images(images).tolist(),
    "texts": encoder.encode_texts(["a photo of a cat", "dog"]).tolist(),
    "logit_scale": encoder.logit_scale,
}))
"""


@pytest.fixture
def no_exports_left():
    """Each test ends with no export child running (a failing assertion included)."""
    yield
    onnx_engine.stop_background_exports()
    assert onnx_engine.background_exports() == []


def test_a_cached_export_loads_without_the_pytorch_model(tiny_clip, cache):
    """Another process with the export cached: the tokenizer, the preprocessing config and the two sessions only,
    never transformers (its config, tokenizer or model classes) nor dynamo; the same embeddings and temperature as
    PyTorch."""
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch")
    HFCLIPEncoder(str(tiny_clip))  # exports both towers
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", LEAN_LOAD, str(tiny_clip)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    lean = json.loads(run.stdout.splitlines()[-1])
    assert (lean["engine"], lean["model_built"], lean["modules"]) == ("onnx", False, [])
    assert lean["logit_scale"] == reference.logit_scale
    assert cosines(torch.tensor(lean["images"]), reference.encode_images(IMAGES[:2])).min() >= 0.99999
    assert cosines(torch.tensor(lean["texts"]), reference.encode_texts(["a photo of a cat", "dog"])).min() >= 0.99999


def test_relevancy_maps_on_a_lean_encoder(tiny_clip, cache):
    """A lean encoder loads the PyTorch model the first time a map needs patch tokens, and gives the same map."""
    HFCLIPEncoder(str(tiny_clip))
    lean, reference = HFCLIPEncoder(str(tiny_clip)), HFCLIPEncoder(str(tiny_clip), engine="torch")
    assert lean.engine == "onnx" and lean._model is None
    maps = [
        relevancy(e, IMAGES[0], ["cat", "dog"], ("a photo of {}",), "dog", EmbeddingCache(8)) for e in (lean, reference)
    ]
    assert lean._model is not None and lean.engine == "onnx"  # still answering in ONNX Runtime
    assert maps[0].heat.shape == (4, 4) and np.allclose(maps[0].heat, maps[1].heat, atol=1e-4)


def wait_for_switch(encoder, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while encoder.exporting and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not encoder.exporting, "the background export did not end"


def test_background_export_answers_in_pytorch_then_switches_with_the_same_scores(
    tiny_clip, cache, caplog, no_exports_left
):
    caplog.set_level(logging.INFO, logger="clipdemo.onnx_engine")
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch")
    forget_encoder(str(tiny_clip))  # loaded by an earlier test with the export cache of its own
    encoder = load_encoder(str(tiny_clip), background_export=True)
    assert encoder.engine == "torch" and encoder.exporting and onnx_engine.background_exports()
    assert encoder.describe().endswith("(fp32, PyTorch, ONNX export running)")
    before = encoder.encode_images(IMAGES)  # answered now, while the export runs
    assert cosines(before, reference.encode_images(IMAGES)).min() >= 0.99999
    wait_for_switch(encoder)
    assert encoder.engine == "onnx" and encoder._model is None and encoder.describe().endswith("(fp32, ONNX Runtime)")
    assert len(models_in(cache)) == 2 and onnx_engine.background_exports() == []
    assert cosines(encoder.encode_images(IMAGES), before).min() >= 0.99999
    assert cosines(encoder.encode_texts(TEXTS), reference.encode_texts(TEXTS)).min() >= 0.99999
    assert any("in the background" in r.getMessage() for r in caplog.records)


FRESH_SERVER = """
import sys, json, time
from PIL import Image
from clipdemo.encoders import load_encoder

encoder = load_encoder(sys.argv[1], background_export=True)
images = [Image.effect_noise((64, 48), 40).convert("RGB"), Image.new("RGB", (30, 50), "orange")]
during = {"engine": encoder.engine, "images": encoder.encode_images(images).tolist()}
worker = encoder._worker._process
deadline = time.monotonic() + 120
while encoder.exporting and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({
    "during": during,
    "after": {"engine": encoder.engine, "images": encoder.encode_images(images).tolist()},
    "model_built": encoder._model is not None,
    "worker_alive": worker.poll() is None,
    "modules": [m for m in ("transformers.modeling_utils", "torch._dynamo", "sympy") if m in sys.modules],
}))
"""


def test_a_fresh_server_answers_from_a_pytorch_child_and_never_imports_the_modeling_stack(tiny_clip, cache):
    """While the export runs, a child process answers in PyTorch; the server itself never loads the model nor
    imports transformers' modeling stack (dynamo, sympy: ~100 MiB kept for good), and the child is gone after the
    switch. The same embeddings before and after, and as PyTorch in this process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", FRESH_SERVER, str(tiny_clip)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert (out["during"]["engine"], out["after"]["engine"]) == ("torch", "onnx")
    assert (out["model_built"], out["worker_alive"], out["modules"]) == (False, False, [])
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch").encode_images(IMAGES[:2])
    for phase in ("during", "after"):
        assert cosines(torch.tensor(out[phase]["images"]), reference).min() >= 0.99999, phase


def test_a_request_that_took_the_pytorch_child_before_the_switch_finishes_on_it(tiny_clip, cache, no_exports_left):
    """A request keeps the engine it started with: a long one (many text batches) spanning the switch still
    answers; the child ends when that request lets it go."""
    encoder = HFCLIPEncoder(str(tiny_clip), background_export=True)
    towers, _, _ = encoder._runner()  # what a request in flight holds
    process = towers._process
    wait_for_switch(encoder)
    assert encoder.engine == "onnx" and process.poll() is None
    ids, mask = map(torch.from_numpy, encoder.tokenizer.pad(encoder.tokenizer.ids(TEXTS)))
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch").encode_texts(TEXTS)
    assert cosines(torch.nn.functional.normalize(towers.text(ids, mask), dim=-1), reference).min() >= 0.99999
    del towers
    assert process.wait(10) is not None


def test_a_pytorch_child_that_dies_or_cannot_load_is_one_sentence_then_this_process_answers(
    tiny_clip, cache, tmp_path, no_exports_left, caplog
):
    encoder = HFCLIPEncoder(str(tiny_clip), background_export=True)
    onnx_engine.stop_background_exports()
    encoder._worker._process.kill()  # an out-of-memory kill, say
    encoder._worker._process.wait(10)
    reference = HFCLIPEncoder(str(tiny_clip), engine="torch").encode_texts(TEXTS)
    assert cosines(encoder.encode_texts(TEXTS), reference).min() >= 0.99999 and encoder._model is not None
    broken = tmp_path / "broken"  # its config no longer fits its weights: neither process can load it
    shutil.copytree(tiny_clip, broken)
    config = json.loads((broken / "config.json").read_text())
    config["vision_config"]["hidden_size"] = 2 * config["vision_config"].get("hidden_size", 768)
    (broken / "config.json").write_text(json.dumps(config))
    encoder = HFCLIPEncoder(str(broken), background_export=True)
    sentences = []
    for attempt in ("the child fails to load it, then this process", "this process"):
        with pytest.raises(ModelUnavailable) as e:
            encoder.encode_texts(["dog"])
        assert str(broken) in str(e.value) and "\n" not in str(e.value), attempt
        sentences.append(str(e.value))
    assert sentences[0] == sentences[1] and "could not be loaded" in sentences[0]  # the encoder's sentence, each time
    assert "shapes its config.json gives" in sentences[0] and "above report" not in sentences[0]
    assert any("PyTorch child could not load" in r.getMessage() for r in caplog.records)


def test_a_stopped_background_export_leaves_pytorch_answering(tiny_clip, cache, caplog, no_exports_left):
    encoder = HFCLIPEncoder(str(tiny_clip), background_export=True)
    onnx_engine.stop_background_exports()
    wait_for_switch(encoder)
    assert encoder.engine == "torch" and encoder.encode_texts(["dog"]).shape[0] == 1 and models_in(cache) == []
    assert any("stays in PyTorch" in m for m in engine_logs(caplog))


def test_the_cli_builds_a_cached_exports_sessions_while_it_imports_torch(
    tiny_clip, cache, tmp_path, monkeypatch, capsys
):
    """``preload`` starts both sessions in threads; the encoder takes those (none built twice), with the same
    answers as a load without it. A session with other threads than PyTorch's is dropped; no export, no preload."""
    folder = tmp_path / "copy"  # a spec no other test has loaded: the encoder registry builds it here
    shutil.copytree(tiny_clip, folder)
    onnx_cache.preload(onnx_cache.HF_CLIP, str(folder), "fp32")
    assert onnx_cache._preloaded == {}  # nothing cached yet
    HFCLIPEncoder(str(folder))  # exports both towers
    built = []
    real = onnx_cache.new_session
    monkeypatch.setattr(
        onnx_cache, "new_session", lambda *a, **k: built.append(threading.current_thread().name) or real(*a, **k)
    )
    image = tmp_path / "a.png"
    IMAGES[0].save(image)
    assert cli.main(["zero-shot", "--model", str(folder), "--labels", "cat,dog", str(image)]) == 0
    assert built == ["onnx-preload", "onnx-preload"] and onnx_cache._preloaded == {}
    preloaded = json.loads(capsys.readouterr().out)
    forget_encoder(str(folder))
    assert cli.main(["zero-shot", "--model", str(folder), "--labels", "cat,dog", str(image)]) == 0
    assert json.loads(capsys.readouterr().out) == preloaded
    model = next(cache.glob("hf-clip-image-*")) / "model.onnx"
    onnx_cache.preload(onnx_cache.HF_CLIP, str(folder), "fp32")
    assert onnx_cache.take(model, torch.get_num_threads() + 1) is None and model not in onnx_cache._preloaded
    assert onnx_cache.take(model, torch.get_num_threads()) is None  # taken once only
