"""Function prediction (ComproESM appendix H) on enzyme EC numbers.

* ``mc4_acc``: 4-way multiple choice, as published: a linear layer projects the protein embedding
  into a label space, the candidate whose label vector has the highest dot product wins; one true
  and three random EC numbers per test protein (chance 25%). The paper embedded GO descriptions
  with PubMedBERT; offline we give each EC number the sum of learned vectors of its four prefixes
  (``3``, ``3.5``, ``3.5.2``, ``3.5.2.6``), so unseen EC numbers still get a vector from their
  seen levels. Trained with a softmax over the training labels.
* ``nn_ec{1..4}_acc``: nearest-neighbour annotation transfer (cosine, train -> test), accuracy of
  the transferred EC number at each level.

Same enzyme subset as the family task (embedded once), its own seeded 1:1 split.
Data: ``function/enzymes_ec_split10.tsv`` (Swiss-Prot enzymes, from CLEAN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ._common import BenchModel, Context, Row, enzyme_subset, skipped, stratified_half_split

TASK = "function"
N_CHOICES = 4
LABEL_DIM = 64
EPOCHS = 300


def prefixes(ec: str) -> list[str]:
    parts = ec.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


class LabelSpaceProbe:
    """Protein -> label-space linear projection scored against hierarchical EC label vectors."""

    def __init__(self, dim: int = LABEL_DIM, epochs: int = EPOCHS, lr: float = 1e-2, weight_decay: float = 1e-4,
                 random_state: int = 0) -> None:
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def fit(self, x: np.ndarray, labels: list[str]) -> LabelSpaceProbe:
        self.mean_ = x.mean(0)
        self.scale_ = x.std(0) + 1e-6
        self.vocab_ = {p: i for i, p in enumerate(sorted({p for lab in labels for p in prefixes(lab)}))}
        classes = sorted(set(labels))
        g = torch.Generator().manual_seed(self.random_state)
        proj = torch.nn.Linear(x.shape[1], self.dim)
        with torch.no_grad():
            proj.weight.normal_(0, x.shape[1] ** -0.5, generator=g)
            proj.bias.zero_()
        table = torch.nn.Parameter(torch.randn(len(self.vocab_), self.dim, generator=g) * 0.1)
        xt = torch.from_numpy(((x - self.mean_) / self.scale_).astype(np.float32))
        cls_mat = self._composition(classes)
        target = torch.tensor([classes.index(lab) for lab in labels])
        opt = torch.optim.Adam([*proj.parameters(), table], lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(proj(xt) @ (cls_mat @ table).T, target)
            loss.backward()
            opt.step()
        self.proj_ = proj.eval()
        self.table_ = table.detach()
        return self

    def _composition(self, labels: list[str]) -> torch.Tensor:
        """(n_labels, vocab) 0/1 matrix of the known prefixes of each label."""
        m = torch.zeros(len(labels), len(self.vocab_))
        for i, lab in enumerate(labels):
            for p in prefixes(lab):
                if p in self.vocab_:
                    m[i, self.vocab_[p]] = 1.0
        return m

    def score(self, x: np.ndarray, candidates: list[list[str]]) -> np.ndarray:
        """(n, n_candidates) dot products between projected proteins and candidate label vectors."""
        with torch.no_grad():
            z = self.proj_(torch.from_numpy(((x - self.mean_) / self.scale_).astype(np.float32)))
            return np.stack([(self._composition(c) @ self.table_ @ z[i]).numpy() for i, c in enumerate(candidates)])


def multiple_choice(ec: np.ndarray, is_train: np.ndarray, all_labels: list[str],
                    rng: np.random.Generator) -> list[list[str]]:
    """For each test protein: its EC number first, then three distinct random other EC numbers."""
    out = []
    for lab in ec[~is_train]:
        others = [c for c in rng.choice(all_labels, size=N_CHOICES + 3, replace=False) if c != lab]
        out.append([lab, *others[: N_CHOICES - 1]])
    return out


def nearest_neighbour_accuracy(x: np.ndarray, ec: np.ndarray, is_train: np.ndarray) -> list[float]:
    """Accuracy at EC levels 1..4 of the label of each test protein's most cosine-similar train protein."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    nn = np.argmax(xn[~is_train] @ xn[is_train].T, axis=1)
    pred = ec[is_train][nn]
    true = ec[~is_train]
    return [float(np.mean([p.split(".")[:k] == t.split(".")[:k] for p, t in zip(pred, true)])) for k in (1, 2, 3, 4)]


def run(ctx: Context, model: BenchModel) -> list[Row]:
    data = enzyme_subset(ctx)
    if data["ec3"].nunique() < 2:
        return skipped(TASK, "fewer than 2 EC classes left after excluding the models' training proteins")
    rng = ctx.rng(TASK)
    is_train = stratified_half_split(data["ec3"].to_numpy(), rng)
    all_labels = sorted(set(pd.read_csv(ctx.data("function", "enzymes_ec_split10.tsv"), sep="\t",
                                         usecols=["EC number"])["EC number"].str.split(";").explode().str.strip()))
    all_labels = [lab for lab in all_labels if lab.count(".") == 3 and "-" not in lab and "n" not in lab]
    ec = data["ec"].to_numpy()
    cands = multiple_choice(ec, is_train, all_labels, rng)
    cand_col = np.full(len(data), "", dtype=object)
    cand_col[~is_train] = ["|".join(c) for c in cands]
    ctx.write_split(TASK, data[["id", "ec"]].assign(split=np.where(is_train, "train", "test"), candidates=cand_col))
    x = model.pooled(data["sequence"].tolist())
    probe = LabelSpaceProbe(random_state=ctx.seed).fit(x[is_train], list(ec[is_train]))
    scores = probe.score(x[~is_train], cands)
    mc = float(np.mean(scores[:, 0] > scores[:, 1:].max(axis=1)))  # a tie counts as wrong
    n_test = int((~is_train).sum())
    rows = [Row(TASK, "mc4_acc", mc, n_test, "1 true + 3 random EC numbers; chance 0.25")]
    for k, acc in enumerate(nearest_neighbour_accuracy(x, ec, is_train), start=1):
        rows.append(Row(TASK, f"nn_ec{k}_acc", acc, n_test))
    return rows
