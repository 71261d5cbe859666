"""The training loop: Adam, weighted cross-entropy, flips/rotations, early stopping.

Everything here runs in the calling process on the CPU, with a fixed number of threads
and deterministic algorithms, so the same inputs and seed give the same weights.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from geoembed.train.data import IGNORE

__all__ = ["FitResult", "ValWindow", "deterministic_torch", "fit", "predict_windows"]


@dataclass
class ValWindow:
    """A validation block read with context around it.

    Attributes
    ----------
    x : numpy.ndarray
        ``(band, h, w)`` normalised inputs of the block plus its context.
    y : numpy.ndarray
        ``(bh, bw)`` class ids of the block itself (:data:`IGNORE` where unlabelled).
    inner : (slice, slice)
        Where the block sits inside ``x``.
    """

    x: np.ndarray
    y: np.ndarray
    inner: tuple[slice, slice]


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    model : torch.nn.Module
        The network with the weights of the best epoch, in eval mode.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``.
    best_epoch : int
        Epoch (1-based) whose weights were kept.
    stopped_early : bool
        Whether training stopped before ``epochs``.
    """

    model: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False


@contextlib.contextmanager
def deterministic_torch(seed: int, threads: int) -> Iterator[Any]:
    """Seed torch, fix its thread count and force deterministic kernels; restore afterwards."""
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(max(1, int(threads)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    try:
        yield torch
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _augment(x: Any, y: Any, gen: Any) -> tuple[Any, Any]:
    """Random rot90 (k = 0..3) and horizontal flip per sample; the 8 symmetries of a square."""
    import torch

    n = x.shape[0]
    ks = torch.randint(0, 4, (n,), generator=gen).tolist()
    flips = torch.randint(0, 2, (n,), generator=gen).tolist()
    xs, ys = [], []
    for i in range(n):
        xi, yi = torch.rot90(x[i], ks[i], (1, 2)), torch.rot90(y[i], ks[i], (0, 1))
        if flips[i]:
            xi, yi = torch.flip(xi, (2,)), torch.flip(yi, (1,))
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def predict_windows(model: Any, windows: Sequence[ValWindow]) -> list[np.ndarray]:
    """Logits ``(classes, bh, bw)`` of each validation block (eval mode, no gradients)."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for w in windows:
            logits = model(torch.from_numpy(np.ascontiguousarray(w.x))[None])[0]
            out.append(logits[:, w.inner[0], w.inner[1]].numpy())
    return out


def _val_scores(model: Any, windows: Sequence[ValWindow], weights: Any) -> tuple[float, float]:
    import torch

    loss_sum, weight_sum, correct, total = 0.0, 0.0, 0, 0
    for w, logits in zip(windows, predict_windows(model, windows)):
        target = torch.from_numpy(w.y.astype(np.int64))
        keep = target != IGNORE
        if not bool(keep.any()):
            continue
        lg = torch.from_numpy(logits).permute(1, 2, 0)[keep]
        tg = target[keep]
        per_px = torch.nn.functional.cross_entropy(lg, tg, reduction="none")
        wt = weights[tg]
        loss_sum += float((per_px * wt).sum())
        weight_sum += float(wt.sum())
        correct += int((lg.argmax(1) == tg).sum())
        total += int(tg.numel())
    if total == 0:
        return math.nan, math.nan
    return loss_sum / max(weight_sum, 1e-12), correct / total


def fit(
    x: np.ndarray,
    y: np.ndarray,
    val: Sequence[ValWindow],
    *,
    n_classes: int,
    class_weights: np.ndarray,
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    width: int = 32,
    dilations: Sequence[int] = (1, 2, 4, 2, 1),
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
) -> FitResult:
    """Train a :class:`~geoembed.train.model.DilatedFCN` on normalised patches.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, band, p, p)`` float32 normalised training patches (no NaN).
    y : numpy.ndarray
        ``(n, p, p)`` int64 class ids, :data:`~geoembed.train.data.IGNORE` where unlabelled.
    val : sequence of ValWindow
        Validation blocks (spatially held out).
    n_classes : int
        Number of classes.
    class_weights : numpy.ndarray
        ``(n_classes,)`` loss weights.
    epochs : int
        Maximum passes over the training patches.
    batch_size : int
        Patches per optimisation step.
    learning_rate, weight_decay : float
        Adam settings.
    patience : int
        Stop after this many epochs without a lower validation loss (0: never stop early).
    width : int
        Hidden channels.
    dilations : sequence of int
        Dilation of each 3 x 3 layer.
    seed : int
        Seed for the initial weights, the batch order and the augmentations.
    threads : int
        PyTorch CPU threads.
    progress : bool
        Show a progress bar (one step per epoch) on stderr.

    Returns
    -------
    FitResult
    """
    from tqdm.auto import tqdm

    with deterministic_torch(seed, threads) as torch:
        from geoembed.train.model import DilatedFCN

        model = DilatedFCN(x.shape[1], n_classes, width=width, dilations=dilations)
        weights = torch.from_numpy(np.asarray(class_weights, dtype=np.float32))
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=IGNORE)
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        result = FitResult(model)
        best_loss, best_state, stale = math.inf, None, 0
        bar = tqdm(range(1, epochs + 1), desc="train-cnn", unit="epoch", file=sys.stderr,
                   disable=not progress, leave=False)  # fmt: skip
        for epoch in bar:
            model.train()
            order = torch.randperm(xt.shape[0], generator=gen)
            total, count = 0.0, 0
            for start in range(0, xt.shape[0], batch_size):
                idx = order[start : start + batch_size]
                if idx.numel() < 2:  # batch norm needs more than one sample
                    continue
                xb, yb = _augment(xt[idx], yt[idx], gen)
                if not bool((yb != IGNORE).any()):
                    continue
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            val_loss, val_acc = _val_scores(model, val, weights)
            row = {
                "epoch": epoch,
                "train_loss": total / max(count, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
            }
            result.history.append(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_loss=f"{val_loss:.3f}",
                            val_acc=f"{val_acc:.3f}")  # fmt: skip
            if val_loss < best_loss - 1e-6:
                best_loss, stale, result.best_epoch = val_loss, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if patience and stale >= patience:
                    result.stopped_early = epoch < epochs
                    break
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
    return result
