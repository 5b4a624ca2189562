"""The paper's 2-D illustration of community-propagation clustering (ComproESM appendix A, Fig. 5).

120 random 2-D points, each with one of 30 fine (family) and 10 coarse (superfamily) categories, are
optimised together with learnable fine and coarse centres under L = w L_fine + (1 - w) L_coarse.

``score="dot"`` is the published inner product; there the centre a point belongs to is the one with
the highest score (the appendix equates max inner product with min distance for unit vectors, but
the optimised vectors are not unit length, so Euclidean-nearest and highest-score centres differ:
both purities are reported). ``score="sqdist"`` uses -||p - c||^2, for which the two coincide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .module import community_loss


@dataclass
class ToyResult:
    points: np.ndarray  # (n, 2) optimised point vectors
    fine_centres: np.ndarray  # (n_fine, 2)
    coarse_centres: np.ndarray  # (n_coarse, 2)
    fine: np.ndarray  # (n,) fine category of each point
    coarse: np.ndarray  # (n,) coarse category
    fine_purity: float  # fraction of points whose nearest (highest-score) fine centre is their own
    coarse_purity: float
    fine_purity_euclidean: float  # same with the Euclidean-nearest centre
    loss: list[float]


def _scores(points: torch.Tensor, centres: torch.Tensor, score: str) -> torch.Tensor:
    if score == "dot":
        return points @ centres.T
    if score == "sqdist":
        return -torch.cdist(points, centres) ** 2
    raise ValueError(f"score must be 'dot' or 'sqdist', not {score!r}")


def nearest_centre_purity(points: np.ndarray, centres: np.ndarray, labels: np.ndarray, score: str = "sqdist") -> float:
    """Fraction of points whose nearest centre (highest ``score``; sqdist = Euclidean) is their own."""
    s = _scores(torch.as_tensor(points), torch.as_tensor(centres), score)
    return float((s.argmax(1).numpy() == labels).mean())


def toy_cpbc(n_points: int = 120, n_fine: int = 30, n_coarse: int = 10, w: float = 0.2, steps: int = 2000,
             lr: float = 0.05, score: str = "dot", random_state: int = 0) -> ToyResult:
    """Optimise points and centres to convergence (full batch, Adam) and report nearest-centre purity."""
    if n_fine % n_coarse or n_points % n_fine:
        raise ValueError("n_points must be a multiple of n_fine, and n_fine a multiple of n_coarse")
    gen = torch.Generator().manual_seed(random_state)
    fine = torch.arange(n_points) % n_fine
    coarse = fine % n_coarse  # each coarse category holds n_fine / n_coarse fine ones
    pts = torch.randn(n_points, 2, generator=gen).requires_grad_(True)
    fc = torch.randn(n_fine, 2, generator=gen).requires_grad_(True)
    cc = torch.randn(n_coarse, 2, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([pts, fc, cc], lr=lr)
    history = []
    for _ in range(steps):
        if score == "dot":  # the published loss, shared with the trainer
            lf = community_loss(pts, fc, fine).mean()
            lc = community_loss(pts, cc, coarse).mean()
        else:
            lf = torch.nn.functional.cross_entropy(_scores(pts, fc, score), fine)
            lc = torch.nn.functional.cross_entropy(_scores(pts, cc, score), coarse)
        loss = w * lf + (1 - w) * lc
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    P, F, C = (t.detach().numpy() for t in (pts, fc, cc))
    f, c = fine.numpy(), coarse.numpy()
    return ToyResult(P, F, C, f, c, nearest_centre_purity(P, F, f, score), nearest_centre_purity(P, C, c, score),
                     nearest_centre_purity(P, F, f, "sqdist"), history)


def plot_toy(res: ToyResult, out: str | Path) -> None:
    """Points (shape = coarse category, colour = fine), fine centres blue, coarse centres red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = "os^vD<>phX*P"
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab20")
    for p, f, c in zip(res.points, res.fine, res.coarse):
        ax.scatter(p[0], p[1], marker=markers[c % len(markers)], color=cmap(f % 20), s=30, alpha=0.8)
    ax.scatter(res.fine_centres[:, 0], res.fine_centres[:, 1], c="tab:blue", s=60, marker="x",
               label="fine (family) centres")
    ax.scatter(res.coarse_centres[:, 0], res.coarse_centres[:, 1], c="tab:red", s=80, marker="+",
               label="coarse (superfamily) centres")
    ax.set_aspect("equal")
    ax.set_title(f"community-propagation clustering, nearest-centre purity: fine {res.fine_purity:.2f}, "
                 f"coarse {res.coarse_purity:.2f}", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=150)
    plt.close(fig)
