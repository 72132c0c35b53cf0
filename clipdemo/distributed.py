"""torch.distributed for training: one code path for 1 and N processes.

``torchrun --nproc_per_node=N -m clipdemo train scratch …`` sets RANK / WORLD_SIZE / LOCAL_RANK and the
rendezvous; ``runtime()`` then joins the process group (nccl on GPUs, gloo on CPUs). A plain
``python -m clipdemo train …`` has no such variables and is the 1-process case of the same code: every
helper below is then the identity.

The contrastive loss needs every rank's negatives (and, with multi-positive targets, every rank's labels):
``contrastive_loss_global`` all-gathers image and text features with gradients flowing back to the rank that
made them (open_clip's gather-with-grad + local loss). Each rank scores its own rows against the global batch;
with DDP averaging gradients over ranks this is the same loss and the same update as one process on the whole
batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from clipdemo.devices import pick_device


@dataclass
class Runtime:
    """Where this process trains and which share of the work is its own."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def runtime(device: str = "auto") -> Runtime:
    """Join the process group when launched by torchrun (once per process); else a single-process Runtime."""
    if not launched_by_torchrun():
        return Runtime(pick_device(device))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Runtime(
        torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"), dist.get_rank(), dist.get_world_size()
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's rows and hands them back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss touched these rows
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order; equal sizes); gradients flow back to their own rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return x
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order; equal sizes), without gradients (labels)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def contrastive_loss_global(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric cross-entropy of this rank's pairs against the global batch.

    ``labels`` None: CLIP's loss, each image's own caption is its only positive (the tutorial's). Given (the class
    of each row): multi-positive targets, UniCL / SupCon style: every caption of the same class in the batch is a
    positive, each image's target spread evenly over them (and each caption's over the same-class images), less
    the targets' entropy so that 0 is perfect (a KL divergence; same gradients). With captions built from class
    names, the plain loss pushes same-class pairs apart, and its floor is ln(images per class in the batch).
    Equal local batch sizes are assumed (the sampler pads to make them so).
    """
    all_images, all_texts = gather_with_grad(image_features), gather_with_grad(text_features)
    n = image_features.shape[0]
    rank = dist.get_rank() if dist.is_initialized() else 0
    per_image = logit_scale * image_features @ all_texts.T  # local images vs every text
    per_text = logit_scale * text_features @ all_images.T  # local texts vs every image
    if labels is None:
        targets = torch.arange(rank * n, (rank + 1) * n, device=image_features.device)
    else:
        positives = (labels[:, None] == gather(labels)[None, :]).float()
        targets = positives / positives.sum(1, keepdim=True)
        # minus the targets' entropy (a constant): the loss reads 0 for a perfect model, as the plain one does
        floor = -(targets * targets.clamp_min(1e-12).log()).sum(1).mean()
        return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2 - floor
    return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2


def mean_across_ranks(value: float) -> float:
    """The mean of a scalar over ranks (metrics, losses for the log)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item() / dist.get_world_size())


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a cancel or a time budget seen by rank 0 stops all)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (e.g. the output folder a run writes to)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
