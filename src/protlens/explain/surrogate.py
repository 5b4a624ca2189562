"""A small 1-D CNN over per-residue embeddings (L x D) that predicts a protein's cluster.

Clusters come from pooled embeddings and carry no residue-level information; the surrogate learns a
residue-level decision function that reproduces them, so attribution methods have something to
differentiate. Its held-out accuracy says how far its explanations can be trusted: the model is
trained on one split and evaluated on the other, and the *same* fitted network is explained.

The surrogate is a small ensemble of independently initialised CNNs, explained through the mean of
their cluster log-odds. A cluster can usually be told apart by many different residue patterns, and
one narrow network picks an arbitrary few of them (its explanation is one of many equally accurate
ones); averaging over channels and members keeps what they agree on, the patterns every member of
the cluster shares. On simulated families with planted motifs (seed 0, all at 100% held-out
accuracy) the integrated-gradients AUROC for the motif residues was 0.78 for one 64-channel network
with kernel 9, 0.92 for one of 512 channels with kernel 5, 0.92 for 4 x 128 (the default) and 0.95
for 8 x 128 (twice the cost). Results on other seeds: benchmarks/results/explain.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._progress import track
from ..errors import InputError


class ClusterCNN(nn.Module):
    """Standardise -> Conv1d -> ReLU -> masked global max-pool -> Linear.

    One convolution with max pooling is a motif detector (DeepBind-style): each channel fires on a
    local pattern anywhere in the sequence, which keeps attributions local and readable (mean
    pooling spreads every channel over the whole protein and recovered planted motifs far worse).
    A short kernel (5) keeps a channel's receptive field inside a short motif, so the residues next
    to it do not share its credit. Standardisation is part of the module so gradients are taken
    w.r.t. the raw embeddings.
    """

    def __init__(self, dim: int, n_classes: int, channels: int = 128, kernel_size: int = 5,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.conv = nn.Conv1d(dim, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cluster logits ``[B, n_classes]`` for embeddings ``x`` ``[B, L, D]`` (``mask``: real residues)."""
        h = ((x - self.mean) / self.scale).transpose(1, 2)
        h = torch.relu(self.conv(h))
        if mask is not None:
            h = h.masked_fill(~mask[:, None, :], float("-inf"))
        return self.head(self.dropout(h.amax(dim=2)))


class ClusterCNNEnsemble(nn.Module):
    """Independently trained :class:`ClusterCNN` members; the logits are the members' mean.

    Gradient-based attributions are linear in the model, so explaining the mean is (up to the
    log-odds transform) averaging the members' explanations.
    """

    def __init__(self, members: Sequence[ClusterCNN]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([m(x, mask) for m in self.members]).mean(0)


def pad_batch(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``(L_i, D)`` arrays to ``[B, L_max, D]`` plus a boolean residue mask."""
    width = max(len(a) for a in arrays)
    x = np.zeros((len(arrays), width, arrays[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(arrays), width), dtype=bool)
    for i, a in enumerate(arrays):
        x[i, : len(a)] = a
        mask[i, : len(a)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def stratified_holdout(y: np.ndarray, test_size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Train/test indices with at least one member of every class on each side."""
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = min(max(1, int(round(test_size * len(idx)))), len(idx) - 1)
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


class SurrogateCNN:
    """Fit a :class:`ClusterCNNEnsemble` on a stratified split; the held-out accuracy is ``test_accuracy_``.

    ``fit(X, y)`` takes a list of ``(L_i, D)`` arrays and cluster labels. Every cluster needs at
    least two members (one to train on, one to test on). The ``n_members`` networks share the split
    and differ in initialisation and batch order (seeds ``random_state + j``).
    """

    def __init__(self, channels: int = 128, kernel_size: int = 5, n_members: int = 4, dropout: float = 0.2,
                 epochs: int = 40, batch_size: int = 32, lr: float = 3e-3, weight_decay: float = 1e-3,
                 test_size: float = 0.25, random_state: int = 0, progress: bool = False) -> None:
        self.channels = channels
        self.kernel_size = kernel_size
        self.n_members = n_members
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.test_size = test_size
        self.random_state = random_state
        self.progress = progress

    def fit(self, X: Sequence[np.ndarray], y: Sequence) -> SurrogateCNN:
        y = np.asarray(y).astype(str)
        if len(X) != len(y):
            raise InputError(f"surrogate: {len(X)} embeddings but {len(y)} labels")
        if self.n_members < 1:
            raise InputError(f"surrogate: n_members must be >= 1, got {self.n_members}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        counts = np.bincount(codes)
        if len(self.classes_) < 2:
            raise InputError("surrogate: need at least two clusters to explain an assignment")
        if counts.min() < 2:
            lone = self.classes_[counts < 2]
            raise InputError(f"cluster '{lone[0]}' has one member; a surrogate cannot be trained and tested on it "
                             "(recluster with fewer clusters or drop that protein)")
        self.train_index_, self.test_index_ = stratified_holdout(codes, self.test_size,
                                                                 np.random.default_rng(self.random_state))
        train_res = np.concatenate([X[i] for i in self.train_index_]).astype(np.float64)
        mean = torch.from_numpy(train_res.mean(0)).float()
        scale = torch.from_numpy(train_res.std(0) + 1e-6).float()
        members, self.loss_curve_ = [], []
        for j in track(range(self.n_members), f"training the surrogate CNN ({self.n_members} networks x {self.epochs} "
                       "epochs)", enabled=self.progress):
            net, curve = self._fit_member(X, torch.from_numpy(codes), mean, scale, self.random_state + j)
            members.append(net)
            self.loss_curve_.append(curve)
        self.module_ = ClusterCNNEnsemble(members).eval()
        pred = self.predict(X)
        self.train_accuracy_ = float(np.mean(pred[self.train_index_] == y[self.train_index_]))
        self.test_accuracy_ = float(np.mean(pred[self.test_index_] == y[self.test_index_]))
        return self

    def _fit_member(self, X: Sequence[np.ndarray], target: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor,
                    seed: int) -> tuple[ClusterCNN, list[float]]:
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        net = ClusterCNN(X[0].shape[1], len(self.classes_), self.channels, self.kernel_size, self.dropout)
        net.mean.copy_(mean)
        net.scale.copy_(scale)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        curve = []
        net.train()
        for _ in range(self.epochs):
            order = rng.permutation(self.train_index_)
            total = 0.0
            for s in range(0, len(order), self.batch_size):
                b = order[s : s + self.batch_size]
                xb, mb = pad_batch([X[i] for i in b])
                loss = loss_fn(net(xb, mb), target[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            curve.append(total / len(order))
        return net.eval(), curve

    @torch.no_grad()
    def decision_function(self, X: Sequence[np.ndarray]) -> np.ndarray:
        """Cluster logits ``(n, n_classes)``."""
        self.module_.eval()
        out = []
        for s in range(0, len(X), self.batch_size):
            xb, mb = pad_batch(X[s : s + self.batch_size])
            out.append(self.module_(xb, mb).numpy())
        return np.concatenate(out)

    def predict(self, X: Sequence[np.ndarray]) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]

    def score(self, X: Sequence[np.ndarray], y: Sequence) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y).astype(str)))
