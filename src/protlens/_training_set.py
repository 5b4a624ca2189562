"""What a model protlens trained saw: its split of every corpus sequence, with labels, in the model folder.

``protlens train`` writes ``training_set.tsv.gz`` into every export (columns :data:`COLUMNS`; labels
joined by ``;``; ``sequence_sha1`` identifies a sequence independently of its id). ``protlens
distill`` reads the teacher's file so the student keeps the teacher's held-out sets, and ``protlens
bench`` reads it to keep training proteins (and, where that empties a task, training labels) out of
its test sets. It sits below both ``train`` and ``bench``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

FILENAME = "training_set.tsv.gz"
COLUMNS = ["id", "split", "family", "superfamily", "sequence_sha1"]
LABEL_SEP = ";"


def rename_repeated_ids(ids: pd.Series) -> pd.Series:
    """Later copies of a repeated id become ``id#2``, ``id#3``, ... (the names in the training table)."""
    k = ids.groupby(ids).cumcount()
    return ids.where(k == 0, ids + "#" + (k + 1).astype(str))


def sequence_key(seq: str) -> str:
    """A short, id-independent key of a sequence (sha1 of its upper-case residues, 16 hex digits)."""
    return hashlib.sha1(seq.strip().upper().encode()).hexdigest()[:16]


def training_frame(ids, splits, families, superfamilies, sequences) -> pd.DataFrame:
    """The table ``protlens train`` exports (labels given as lists per sequence)."""
    return pd.DataFrame({
        "id": list(ids), "split": list(splits),
        "family": [LABEL_SEP.join(x) for x in families],
        "superfamily": [LABEL_SEP.join(x) for x in superfamilies],
        "sequence_sha1": [sequence_key(s) for s in sequences],
    })[COLUMNS]


def write_training_set(folder: str | Path, frame: pd.DataFrame) -> Path:
    path = Path(folder) / FILENAME
    frame[COLUMNS].to_csv(path, sep="\t", index=False, compression={"method": "gzip", "mtime": 0})
    return path


def read_training_set(folder: str | Path) -> pd.DataFrame | None:
    """The model folder's training table, or None when the model carries none."""
    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
