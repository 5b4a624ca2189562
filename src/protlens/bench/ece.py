"""Masked-token ECE (exponentiated cross-entropy, ComproESM section 5.2 / Table 3) on held-out sequences.

The definition is :mod:`protlens._ece` (shared with the trainer, distillation and the model cards):
15% of the residues of each held-out sequence (at least one) are replaced by ``<mask>`` at positions
fixed by the seed, the model predicts them, and ECE = exp(mean cross-entropy) over all masked
residues, with the distribution renormalised over the 25 amino-acid tokens. The uniform, unigram and 4-gram baselines are scored on the very same
masked positions; the n-gram models are counted on the corpus minus the held-out set, and a 4-gram
context that runs into a masked residue backs off to the residues after that mask.

Data: ``pretrain/corpus.tsv`` (for real users: any FASTA/TSV of sequences not used in training;
pass ``--heldout`` with the ids or sequences a model was trained without).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._ece import AA_TOKENS, aa_nll, mask_positions
from .._ece import ece as ece_from_nll
from .._training_set import rename_repeated_ids
from ..errors import InputError
from ..io import iter_fasta
from ..models import ESM_ALPHABET
from ..pp._windows import scoring_spans, span_weights
from ._common import BenchModel, Context, Row, sample_at_most, skipped
from .leakage import drop_training

TASK = "ece"
NGRAM_ORDER = 4
NGRAM_PRIOR = 5.0  # Dirichlet prior weight of each back-off step
_BOS = len(AA_TOKENS)  # sentinel symbol padding each sequence's start for the n-gram counts
_LUT = np.full(256, -1, dtype=np.int64)
for _i, _a in enumerate(AA_TOKENS):
    _LUT[ord(_a)] = _i


def encode(seq: str) -> np.ndarray:
    """Indices into :data:`AA_TOKENS`; raises on other characters."""
    idx = _LUT[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
    if (idx < 0).any():
        raise InputError(f"sequence contains a character outside {AA_TOKENS}")
    return idx


def read_heldout(path: Path, corpus: pd.DataFrame) -> pd.DataFrame:
    """Held-out records from a FASTA (id, sequence) or a list/TSV of ids (first column) found in the corpus."""
    text_start = Path(path).read_text()[:1].strip()
    if text_start == ">":
        recs = list(iter_fasta(path))
        return pd.DataFrame({"id": [r[0] for r in recs], "sequence": [r[1].upper() for r in recs]})
    ids = pd.read_csv(path, sep="\t", header=None, dtype=str, comment="#").iloc[:, 0].str.strip()
    ids = ids[ids != "id"]
    known = corpus.set_index("id")
    missing = ids[~ids.isin(known.index)]
    if len(missing):
        raise InputError(f"{path}: {len(missing)} held-out ids are not in corpus.tsv (first: '{missing.iloc[0]}')")
    return known.loc[ids, ["sequence"]].reset_index()


def heldout_split(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluation records, n-gram training sequences): ``--heldout`` or a seeded 10% of the corpus."""
    corpus = pd.read_csv(ctx.data("pretrain", "corpus.tsv"), sep="\t", dtype=str, keep_default_na=False)
    rng = ctx.rng(TASK)
    if ctx.heldout is not None:
        held = read_heldout(ctx.heldout, corpus)
    elif ctx.leakage is not None and ctx.leakage.ece_holdout is not None:  # the trained models' own split
        corpus = corpus.assign(id=rename_repeated_ids(corpus["id"]))
        held = corpus.set_index("id").loc[ctx.leakage.ece_holdout, ["sequence"]].reset_index()
    else:
        held = corpus.iloc[np.sort(rng.choice(len(corpus), size=len(corpus) // 10, replace=False))]
    held = drop_training(ctx, TASK, held)
    train = corpus[~corpus["id"].isin(held["id"]) & ~corpus["sequence"].isin(held["sequence"])]
    if ctx.smoke:
        train = train.iloc[:2000]
    held = held.iloc[sample_at_most(range(len(held)), ctx.sizes["ece_seqs"], rng)]
    return held[["id", "sequence"]].reset_index(drop=True), train[["id", "sequence"]]


class NgramLM:
    """Order-``n`` residue model, recursively smoothed towards the lower orders (Dirichlet back-off)."""

    def __init__(self, order: int = NGRAM_ORDER, prior: float = NGRAM_PRIOR) -> None:
        self.order = order
        self.prior = prior

    def fit(self, seqs: list[str]) -> NgramLM:
        pad = self.order - 1
        parts = []
        for s in seqs:
            parts.append(np.full(pad, _BOS, dtype=np.int64))
            parts.append(encode(s))
        stream = np.concatenate(parts + [np.full(pad, _BOS, dtype=np.int64)])
        base = _BOS + 1
        self.counts_: list[np.ndarray] = []
        for k in range(1, self.order + 1):
            win = np.lib.stride_tricks.sliding_window_view(stream, k)
            win = win[win[:, -1] != _BOS]  # targets are residues, never the padding
            codes = (win * base ** np.arange(k - 1, -1, -1)).sum(1)
            self.counts_.append(np.bincount(codes, minlength=base**k).astype(np.float64))
        return self

    def prob(self, context: np.ndarray, target: int) -> float:
        """p(target | context) with ``context`` the preceding symbols (may be shorter than order-1)."""
        base = _BOS + 1
        c1 = self.counts_[0]
        p = (c1[target] + 1.0) / (c1.sum() + len(AA_TOKENS))  # add-one unigram
        context = context[-(self.order - 1):] if self.order > 1 else context[:0]
        for k in range(1, len(context) + 1):
            ctx = context[-k:]
            code = int((ctx * base ** np.arange(k, 0, -1)).sum())
            row = self.counts_[k][code : code + base]
            p = (row[target] + self.prior * p) / (row.sum() + self.prior)
        return float(p)


def ngram_ece(lm: NgramLM, seqs: list[str], masks: list[np.ndarray]) -> float:
    """ECE of an n-gram model on the masked positions; contexts stop at the nearest masked residue."""
    nll = []
    pad = lm.order - 1
    for s, pos in zip(seqs, masks):
        idx = np.concatenate([np.full(pad, _BOS, dtype=np.int64), encode(s)])
        masked = np.zeros(len(idx), dtype=bool)
        masked[pos + pad] = True
        for p in pos + pad:
            ctx = idx[p - pad : p]
            hit = np.flatnonzero(masked[p - pad : p])
            if len(hit):
                ctx = ctx[hit[-1] + 1 :]
            nll.append(-np.log(lm.prob(ctx, int(idx[p]))))
    return float(np.exp(np.mean(nll)))


def model_ece(model: BenchModel, seqs: list[str], masks: list[np.ndarray]) -> float:
    """ECE of a masked LM: each sequence (window) once, with all its chosen positions masked together.

    A model trained on shorter crops (protlens-small: 512 residues) declares that reach; scoring it
    beyond would test position extrapolation, not the language model. Longer sequences are read in
    the tiling shared with mutation scoring (windows overlapping by half), and a position's
    amino-acid log-probabilities are combined over the windows holding it under protlens' window
    rule (``protlens.pp.WINDOW_RULE``), then renormalised. Every model still scores the very same
    masked residues.
    """
    reach = model.model.max_residues
    rows, where, owners = [], [], []
    for k, (s, pos) in enumerate(zip(seqs, masks)):
        for start, end in scoring_spans(len(s), reach):
            inside = pos[(pos >= start) & (pos < end)]
            if len(inside):
                toks = ESM_ALPHABET.batch([s[start:end]])[0][0]
                toks[inside - start + 1] = ESM_ALPHABET.mask_idx
                rows.append(toks)
                where.append(inside - start + 1)
                owners.append((k, (start, end), inside))
    reads: dict[tuple[int, int], list[tuple[tuple[int, int], np.ndarray]]] = {}
    for (k, span, inside), lp in zip(owners, model.log_probs(rows, where)):
        for j, p in enumerate(inside):
            reads.setdefault((k, int(p)), []).append((span, lp[j]))
    scores, targets = [], []
    for (k, p), items in reads.items():
        weights = dict(span_weights([span for span, _ in items], [p], len(seqs[k])))
        scores.append(sum(weights[span] * row for span, row in items))
        targets.append(ESM_ALPHABET.tok_to_idx[seqs[k][p]])
    if not targets:
        return ece_from_nll(0.0, 0)
    nll = aa_nll(torch.from_numpy(np.stack(scores)), torch.as_tensor(targets))
    return ece_from_nll(float(nll.double().sum()), len(targets))


def _prepare(ctx: Context) -> tuple[pd.DataFrame, list[str], list[np.ndarray], pd.DataFrame]:
    return ctx.memo(TASK, lambda: _build(ctx))


def _build(ctx: Context) -> tuple[pd.DataFrame, list[str], list[np.ndarray], pd.DataFrame]:
    held, train = heldout_split(ctx)
    max_len = 1022
    seqs = [s[:max_len] for s in held["sequence"]]
    masks = mask_positions([len(s) for s in seqs], ctx.rng(TASK + "/mask"))
    return held, seqs, masks, train


def split_frame(ids, seqs: list[str], masks: list[np.ndarray]) -> pd.DataFrame:
    """The held-out records and their masked positions, as written to the split file."""
    return pd.DataFrame({"id": list(ids), "length_scored": [len(s) for s in seqs],
                         "masked_positions_0based": [",".join(map(str, m)) for m in masks]})


def reference_eces(seqs: list[str], masks: list[np.ndarray], train_seqs: list[str]) -> dict[str, tuple[float, str]]:
    """Uniform, unigram and 4-gram ECE on the given masked positions: ``{name: (ece, note)}``."""
    out = {"uniform": (float(len(AA_TOKENS)), "25 amino-acid tokens")}
    for name, order in (("unigram", 1), ("4-gram", NGRAM_ORDER)):
        out[name] = (ngram_ece(NgramLM(order).fit(train_seqs), seqs, masks),
                     f"counted on {len(train_seqs)} training sequences")
    return out


def baselines(ctx: Context) -> dict[str, list[Row]]:
    """Uniform, unigram and 4-gram ECE on the same held-out masked positions (model-independent)."""
    held, seqs, masks, train = _prepare(ctx)
    ctx.write_split(TASK, split_frame(held["id"], seqs, masks))
    n_tok = int(sum(len(m) for m in masks))
    return {name: [Row(TASK, "ece", value, n_tok, note)]
            for name, (value, note) in reference_eces(seqs, masks, train["sequence"].tolist()).items()}


def run(ctx: Context, model: BenchModel) -> list[Row]:
    if not model.has_logits:
        return skipped(TASK, "model has no masked-LM logits")
    held, seqs, masks, _ = _prepare(ctx)
    n_tok = int(sum(len(m) for m in masks))
    if ctx.heldout:
        note = f"held-out: {ctx.heldout}"
    elif ctx.leakage is not None and ctx.leakage.ece_holdout is not None:
        note = "held-out: the trained models' ece_holdout split"
    else:
        note = f"held-out: seeded 10% of corpus (seed {ctx.seed})"
    return [Row(TASK, "ece", model_ece(model, seqs, masks), n_tok, f"{len(seqs)} sequences; {note}")]
