"""One training step on 2 gloo processes equals 1 process on the whole batch; torchrun trains end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from clipdemo.scratch.config import preset
from clipdemo.scratch.model import ScratchCLIP, contrastive_loss

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_BATCH = 8


def fixed_batch():
    g = torch.Generator().manual_seed(0)
    config = preset("default")
    pixels = torch.randint(
        0, 256, (GLOBAL_BATCH, 3, config.image_size, config.image_size), generator=g, dtype=torch.uint8
    )
    tokens = torch.randint(3, 259, (GLOBAL_BATCH, config.context_length), generator=g)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, 10:] = False  # every caption 10 tokens long
    return config, pixels, tokens, mask


LABELS = torch.tensor([0, 1, 0, 2, 1, 1, 2, 0])  # classes spread over both ranks' halves: positives cross ranks
LOSSES = ("clip", "multi-positive")  # the seed preset's loss, the default preset's


def one_step(model, pixels, tokens, mask, loss_fn):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    image, text, scale = model(pixels, tokens, mask)
    loss = loss_fn(image, text, scale)
    loss.backward()
    optimizer.step()
    return loss.detach()


def worker(rank: int, world: int, init_file: str, out: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from clipdemo.distributed import contrastive_loss_global, mean_across_ranks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    config, pixels, tokens, mask = fixed_batch()
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    results = {}
    for kind in LOSSES:
        labels = LABELS[share] if kind == "multi-positive" else None
        torch.manual_seed(0)
        model = ScratchCLIP(config).eval()  # eval: BatchNorm in the conv stem must not use per-rank statistics
        loss = one_step(
            DistributedDataParallel(model),
            pixels[share],
            tokens[share],
            mask[share],
            lambda i, t, s: contrastive_loss_global(i, t, s, labels=labels),
        )
        results[kind] = {"loss": mean_across_ranks(loss), "state": model.state_dict()}
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_two_processes_give_the_same_loss_and_update_as_one(tmp_path):
    """For CLIP's loss and for the multi-positive one (same-class captions on the other rank are positives too)."""
    from clipdemo.distributed import contrastive_loss_global

    config, pixels, tokens, mask = fixed_batch()
    out = tmp_path / "ddp.pt"
    for attempt in (1, 2):  # gloo over loopback once aborted a worker (SIGABRT) on a loaded CI box: one retry
        try:
            mp.spawn(worker, args=(2, str(tmp_path / f"init-{attempt}"), str(out)), nprocs=2, join=True)
            break
        except mp.ProcessExitedException:
            if attempt == 2:
                raise
    results = torch.load(out, weights_only=True)

    for kind in LOSSES:
        torch.manual_seed(0)
        single = ScratchCLIP(config).eval()
        before = {k: v.clone() for k, v in single.state_dict().items()}
        if kind == "clip":
            loss = one_step(single, pixels, tokens, mask, contrastive_loss)
        else:
            multi = lambda i, t, s: contrastive_loss_global(i, t, s, labels=LABELS)
            loss = one_step(single, pixels, tokens, mask, multi)
        ddp = results[kind]
        print(f"{kind} loss: 1 process {float(loss):.8f}, 2 processes {ddp['loss']:.8f}")
        assert abs(float(loss) - ddp["loss"]) < 1e-5, kind
        moved = 0
        for name, value in single.state_dict().items():
            assert torch.allclose(value, ddp["state"][name], atol=1e-6), (kind, name)
            moved += not torch.equal(value, before[name])
        assert moved > 10  # the step really changed the weights
    assert abs(results["clip"]["loss"] - results["multi-positive"]["loss"]) > 0.1  # two different losses checked


def test_torchrun_trains_on_two_processes_and_writes_one_loadable_checkpoint(tmp_path):
    from clipdemo.testing import colour_folder

    data = colour_folder(tmp_path / "data", ["red thing", "blue thing", "green thing"], {"train": 6, "test": 2})
    out = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPDEMO_CHECKPOINT_DIR": str(tmp_path / "checkpoints")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "clipdemo",
            "train",
            "scratch",
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    assert json.loads(lines[0])["checkpoint"] == str(out)
    from clipdemo.encoders import load_encoder

    encoder = load_encoder(str(out))
    assert encoder.card["processes"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "data"]  # one checkpoint, nothing else written


def test_torchrun_shards_cars_features_into_the_cache_one_process_writes(tmp_path, tiny_clip):
    from clipdemo.data.sources import load_source
    from clipdemo.features import encode_split, feature_cache_path, load_features
    from clipdemo.testing import write_minicars

    data = write_minicars(tmp_path / "cars", classes=3, per_class_train=5, per_class_test=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPDEMO_CHECKPOINT_DIR": str(tmp_path / "ckpts")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "clipdemo",
            "train",
            "head",
            "--data",
            str(data),
            "--backbone",
            str(tiny_clip),
            "--out",
            str(tmp_path / "head"),
            "--epochs",
            "2",
            "--head",
            "linear",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["checkpoint"] == str(tmp_path / "head")
    dataset = load_source(str(data))
    for name, split in dataset.splits.items():  # the merged shards equal what one process encodes
        merged = load_features(
            feature_cache_path(str(tiny_clip), (dataset.fingerprint, name), tmp_path / "ckpts" / ".cache"), split
        )
        single = encode_split(str(tiny_clip), split)
        assert torch.equal(merged.kept, single.kept)
        assert torch.allclose(merged.features, single.features, atol=1e-5)
