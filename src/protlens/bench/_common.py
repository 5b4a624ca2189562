"""What every benchmark task shares: the run context, cached embeddings, batched logits, splits, rows.

A task is a function ``run(ctx, model) -> list[Row]`` in its own module; the runner calls it once
per model. Embeddings are cached per model by sequence, so tasks that use the same proteins (the
enzyme subset of family and function, the CATH pool of family, similarity and figures) embed them
once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import InputError
from ..io import iter_fasta
from ..models import EsmPLM, KmerEmbedder
from .leakage import Leakage, drop_training

#: Default and ``--smoke`` subsample sizes per task (documented in BENCHMARKS.md / each module).
SIZES: dict[str, dict[str, int]] = {
    "default": dict(
        ece_seqs=200, enzymes=600, cath_superfamilies=40, cath_per_sf=10, tenfam_per_class=60,
        mut_positions=20, activity_variants=300, ppi_proteins=300, yeast_proteins=400,
        scop_domains=800, sim_pairs=1010, max_len=1000,
    ),
    "smoke": dict(
        ece_seqs=6, enzymes=48, cath_superfamilies=4, cath_per_sf=4, tenfam_per_class=6,
        mut_positions=3, activity_variants=30, ppi_proteins=40, yeast_proteins=60,
        scop_domains=80, sim_pairs=20, max_len=300,
    ),
}


def default_data_dir() -> Path:
    """``$PROTLENS_BENCH_DATA`` or ``../shared/data`` (the development checkout's layout)."""
    return Path(os.environ.get("PROTLENS_BENCH_DATA", "../shared/data"))


@dataclass
class Row:
    """One measured number (or one skipped task, with ``value`` NaN and a reason in ``note``)."""

    task: str
    metric: str
    value: float
    n: int = 0
    note: str = ""


@dataclass
class Context:
    """Settings shared by all tasks of one run; ``rng(task)`` gives each task its own fixed stream."""

    out: Path
    data_dir: Path
    seed: int = 0
    smoke: bool = False
    heldout: Path | None = None
    scoring: str = "masked-marginals"
    #: principal components kept before every supervised probe (0 = none: the probe sees every dimension)
    pca_cap: int = 0
    #: subsample mutation assays to ``mut_positions`` positions each (labelled in the results)
    fast: bool = False
    max_tokens: int = 4096
    device: str = "cpu"
    sizes: dict[str, int] = field(default_factory=dict)
    #: the models' training proteins to keep out (None: exclusion off); excluded[pool] = (removed, kept)
    leakage: Leakage | None = None
    excluded: dict[str, tuple[int, int]] = field(default_factory=dict)
    _memo: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.sizes = {**SIZES["smoke" if self.smoke else "default"], **self.sizes}

    def memo(self, key: str, build):
        """Build a model-independent dataset once per run (several tasks and models share it)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def rng(self, task: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *task.encode()])

    def data(self, *parts: str) -> Path:
        path = self.data_dir.joinpath(*parts)
        if not path.exists():
            raise InputError(f"benchmark data file {path} is missing (set --data to the folder holding it)")
        return path

    def write_split(self, task: str, frame: pd.DataFrame) -> None:
        """Every split goes to DIR/splits/<task>.tsv so a run can be audited and repeated."""
        folder = self.out / "splits"
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_csv(folder / f"{task}.tsv", sep="\t", index=False)

    def figure_path(self, name: str) -> Path:
        folder = self.out / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name


class BenchModel:
    """A loaded model plus a per-sequence cache of its mean-pooled last-layer embeddings.

    ``head`` (a trained clustering head, protlens.train.module.load_cluster_head) maps every pooled
    embedding into the space the community-clustering loss shaped (``protlens bench --through-head``).
    """

    def __init__(self, name: str, model: EsmPLM | KmerEmbedder, max_tokens: int = 4096, device: str = "cpu",
                 head: torch.nn.Module | None = None) -> None:
        self.name = name
        self.model = model
        self.head = head
        self.max_tokens = max_tokens
        self.device = device
        self._cache: dict[str, np.ndarray] = {}
        self.residues_embedded = 0
        self.seconds_embedding = 0.0

    @property
    def has_logits(self) -> bool:
        return bool(getattr(self.model, "has_logits", False))

    def pooled(self, seqs: Sequence[str]) -> np.ndarray:
        """(n, D) float32 embeddings, computing only sequences not seen before."""
        from ..pp import embed_sequences

        todo = list(dict.fromkeys(s for s in seqs if s not in self._cache))
        if todo:
            t0 = time.perf_counter()
            # pooling=None: the model's own default (ESM: residue mean; UniRep: h_avg)
            res = embed_sequences(self.model, todo, layers=(-1,), pooling=None, max_tokens=self.max_tokens,
                                  device=self.device, progress=False)
            emb = next(iter(res.pooled.values()))
            if self.head is not None:
                with torch.no_grad():
                    emb = self.head(torch.as_tensor(np.asarray(emb), dtype=torch.float32)).numpy()
            self._cache.update(zip(todo, emb))
            self.residues_embedded += sum(len(s) for s in todo)
            self.seconds_embedding += time.perf_counter() - t0
        return np.stack([self._cache[s] for s in seqs]).astype(np.float32)

    def log_probs(self, tokens: list[np.ndarray], positions: list[np.ndarray]) -> list[np.ndarray]:
        """Log-softmax over the vocabulary at ``positions`` of each token row ([len(pos), V] each).

        Rows (already with BOS/EOS, possibly masked) are batched by length under ``max_tokens``.
        """
        model = self.model
        order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
        out: list[np.ndarray | None] = [None] * len(tokens)
        pad = model.alphabet.pad_idx
        i = 0
        with torch.inference_mode():
            while i < len(order):
                width = len(tokens[order[i]])
                n = max(1, self.max_tokens // width)
                chunk = order[i : i + n]
                batch = np.full((len(chunk), width), pad, dtype=np.int64)
                for r, j in enumerate(chunk):
                    batch[r, : len(tokens[j])] = tokens[j]
                logits = model(torch.from_numpy(batch).to(model.device), repr_layers=(), return_logits=True).logits
                lp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
                for r, j in enumerate(chunk):
                    out[j] = lp[r, positions[j]]
                i += n
        return out  # type: ignore[return-value]


class CappedPCA(TransformerMixin, BaseEstimator):
    """PCA to ``min(max_components, n_samples, n_features)`` dimensions, fitted on the training rows only."""

    def __init__(self, max_components: int = 256, random_state: int | None = 0) -> None:
        self.max_components = max_components
        self.random_state = random_state

    def fit(self, X, y=None) -> CappedPCA:
        n = min(self.max_components, *np.shape(X))
        self.pca_ = PCA(n_components=n, random_state=self.random_state).fit(X)
        return self

    def transform(self, X) -> np.ndarray:
        return self.pca_.transform(X)


def head(estimator, seed: int = 0, pca_cap: int = 0) -> Pipeline:
    """The shared preprocessing of every supervised head: standardise, then (``pca_cap`` > 0 only) :class:`CappedPCA`.

    Off by default: a cap hides information from high-dimensional embeddings (ESM-2 650M has 1,280
    dimensions); ``--pca-cap`` trades that for speed on large k-mer profiles.
    """
    if pca_cap > 0:
        return make_pipeline(StandardScaler(), CappedPCA(pca_cap, random_state=seed), estimator)
    return make_pipeline(StandardScaler(), estimator)


def read_fasta_dict(path: Path) -> dict[str, str]:
    return {rid: seq.upper() for rid, seq in iter_fasta(path)}


def stratified_half_split(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``is_train`` with half of each class (rounded down, at least one) in train, 1:1 as published."""
    is_train = np.zeros(len(labels), dtype=bool)
    for lab in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        is_train[idx[: max(1, len(idx) // 2)]] = True
    return is_train


def sample_at_most(items: Sequence, n: int, rng: np.random.Generator) -> list:
    """A seeded subsample of ``n`` items in their original order (all of them if fewer)."""
    if len(items) <= n:
        return list(items)
    keep = np.sort(rng.choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x @ x.T


def skipped(task: str, reason: str) -> list[Row]:
    return [Row(task, "skipped", float("nan"), 0, reason)]


def safe_name(name: str) -> str:
    """A model name usable in a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def enzyme_subset(ctx: Context) -> pd.DataFrame:
    """Seeded subsample of single-EC, fully specified enzymes whose 3rd-level class has >= 10 members.

    Shared by the family (EC 3rd level) and function tasks so the embeddings are computed once.
    """
    return ctx.memo("enzymes", lambda: _enzyme_subset(ctx)).copy()


def _enzyme_subset(ctx: Context) -> pd.DataFrame:
    df = pd.read_csv(ctx.data("function", "enzymes_ec_split10.tsv"), sep="\t", dtype=str)
    df = df.rename(columns={"Entry": "id", "EC number": "ec", "Sequence": "sequence"})
    df = df[~df["ec"].str.contains(";") & df["ec"].str.fullmatch(r"\d+\.\d+\.\d+\.\d+")]
    df = df.assign(ec3=df["ec"].str.rsplit(".", n=1).str[0])
    df = df[df.groupby("ec3")["id"].transform("size") >= 10]
    df = df[df["sequence"].str.len() <= ctx.sizes["max_len"]].reset_index(drop=True)
    df = drop_training(ctx, "enzymes", df)
    df = df[df.groupby("ec3")["id"].transform("size") >= 10].reset_index(drop=True)
    keep = sample_at_most(range(len(df)), ctx.sizes["enzymes"], ctx.rng("enzymes"))
    return df.iloc[keep].reset_index(drop=True)


def cath_domains(ctx: Context) -> pd.DataFrame:
    """CATH S40 domains (id, sequence, superfamily C.A.T.H) no longer than ``max_len``."""
    return ctx.memo("cath", lambda: _cath_domains(ctx)).copy()


def _cath_domains(ctx: Context) -> pd.DataFrame:
    labels = pd.read_csv(ctx.data("cath", "cath_domain_labels.csv"), header=None, names=["id", "sf"], dtype=str)
    sf = dict(zip(labels["id"], labels["sf"]))
    rows = []
    for rid, seq in iter_fasta(ctx.data("cath", "cath_s40.fasta")):
        dom = rid.split("|")[-1].split("/")[0]
        if dom in sf and len(seq) <= ctx.sizes["max_len"]:
            rows.append((dom, seq.upper(), sf[dom]))
    df = pd.DataFrame(rows, columns=["id", "sequence", "superfamily"]).drop_duplicates("id")
    return drop_training(ctx, "cath", df)


def cath_pool(ctx: Context) -> pd.DataFrame:
    """``cath_superfamilies`` seeded superfamilies with >= 10 members, ``cath_per_sf`` domains each.

    Shared by family (CATH part), similarity and the protein-embedding figure.
    """
    df = cath_domains(ctx)
    sizes = df["superfamily"].value_counts()
    eligible = sorted(sizes[sizes >= max(10, ctx.sizes["cath_per_sf"])].index)
    rng = ctx.rng("cath_pool")
    chosen = sample_at_most(eligible, ctx.sizes["cath_superfamilies"], rng)
    parts = [df[df["superfamily"] == s].sample(ctx.sizes["cath_per_sf"], random_state=int(rng.integers(2**31)))
             for s in chosen]
    return pd.concat(parts, ignore_index=True)
