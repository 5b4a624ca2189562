"""Reading sequences into AnnData (validated), joining labels, atomic writes, per-residue sidecars."""

from __future__ import annotations

import gzip
import io as _io
import os
import re
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # anndata and pandas cost ~90 MB and ~0.7 s to import: embedding alone needs neither
    import anndata as ad
    import pandas as pd

from . import _faults
from . import _keys as K
from .errors import InputError

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
#: The 20 standard residues plus the IUPAC ambiguity/rare codes every ESM-2 vocabulary knows.
ALLOWED = frozenset(STANDARD_AA + "XBZUO")
GAPS = frozenset("-.")
_ASCII_SPACE = re.compile(r"[ \t\r\n\v\f]+")
#: Letters of nucleotide sequences (DNA/RNA, N = any base).
NUCLEOTIDES = frozenset("ACGTUN")


#: First bytes of files people pass by mistake, and what to tell them.
_MAGIC = [
    (b"\x89HDF\r\n\x1a\n", "is an HDF5 file (.h5ad/.h5), not FASTA/CSV/TSV"),
    (b"PK\x03\x04", "is a zip archive: unpack it first"),
    (b"BZh", "is bzip2-compressed: decompress it first"),
    (b"\xfd7zXZ\x00", "is xz-compressed: decompress it first"),
    (b"\x28\xb5\x2f\xfd", "is zstd-compressed: decompress it first"),
    (b"\xff\xfe", "is UTF-16 text: save it as UTF-8 or ASCII"),
    (b"\xfe\xff", "is UTF-16 text: save it as UTF-8 or ASCII"),
]


def _sniff(path: Path, head: bytes) -> None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise InputError(f"{path}: {what}")
    if head.startswith(b"\x1f\x8b"):
        raise InputError(f"{path}: is gzip-compressed but not named .gz (rename it to {path.name}.gz)")


def _open_text(path: Path) -> _io.TextIOBase:
    """Open plain or gzip UTF-8 text (a BOM is skipped; universal newlines make CRLF read like LF).

    Files that are not text (HDF5, archives, gzip under a plain name, plain text under .gz, UTF-16)
    are refused here in one line; decoding errors later are turned into one line by :func:`_reading`.
    """
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from None
    try:
        head = raw.peek(8)[:8]
        if path.suffix.lower() == ".gz":
            if not head.startswith(b"\x1f\x8b"):
                raise InputError(f"{path}: is named .gz but is not gzip-compressed (rename it without .gz)")
            raw = gzip.GzipFile(fileobj=raw, mode="rb")
            with _reading(path):
                head = raw.peek(8)[:8]
        _sniff(path, head)
    except BaseException:
        raw.close()
        raise
    return _io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn what a damaged, truncated or non-UTF-8 file raises while being read into one InputError."""
    try:
        yield
    except UnicodeDecodeError as e:
        bad = e.object[e.start:e.start + 1].hex()
        raise InputError(f"{path}: is not UTF-8 text (byte 0x{bad}; latin-1 or binary?): save it as UTF-8 "
                         "or ASCII") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: truncated or damaged gzip file ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def iter_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield (id, raw sequence) pairs; the id is the header up to the first whitespace."""
    path = Path(path)
    header: str | None = None
    chunks: list[str] = []
    with _open_text(path) as fh, _reading(path):
        for lineno, line in enumerate(fh, 1):
            if "\x00" in line:
                raise InputError(f"{path}:{lineno}: NUL byte: a binary file, not FASTA")
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks)
                parts = line[1:].split()
                if not parts:
                    raise InputError(f"{path}:{lineno}: FASTA header without an id")
                header, chunks = parts[0], []
            else:
                if header is None:
                    raise InputError(f"{path}:{lineno}: sequence line before the first '>' header")
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks)


def clean_sequence(record_id: str, seq: str, strip_gaps: bool = False) -> str:
    """Upper-case, drop one terminal '*', optionally strip gaps, and reject anything else.

    Non-ASCII letters are rejected before upper-casing ('ß'.upper() is 'SS').
    """
    seq = _ASCII_SPACE.sub("", seq)
    if not seq.isascii():
        pos, c = next((p, ch) for p, ch in enumerate(seq, 1) if not ch.isascii())
        raise InputError(f"record '{record_id}': invalid character {c!r} at position {pos} "
                         "(allowed: 20 standard amino acids and X B Z U O)")
    seq = seq.upper()
    if seq.endswith("*"):
        seq = seq[:-1]
    if strip_gaps:
        seq = "".join(c for c in seq if c not in GAPS)
    if not seq:
        raise InputError(f"record '{record_id}': empty sequence")
    for pos, c in enumerate(seq, 1):
        if c not in ALLOWED:
            if c in GAPS:
                raise InputError(
                    f"record '{record_id}': gap character '{c}' at position {pos} "
                    "(pass --strip-gaps to remove gaps)"
                )
            raise InputError(
                f"record '{record_id}': invalid character {c!r} at position {pos} "
                "(allowed: 20 standard amino acids and X B Z U O)"
            )
    return seq


def _check_unique(ids: list[str], source: str) -> None:
    dups = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dups:
        shown = ", ".join(dups[:10]) + (" ..." if len(dups) > 10 else "")
        raise InputError(f"{source}: {len(dups)} duplicate id(s): {shown}")


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    sep = "\t" if _base_suffix(path) in {".tsv", ".tab"} else ","
    with _open_text(path) as fh, _reading(path):
        try:
            df = pd.read_csv(fh, sep=sep, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise InputError(f"{path}: empty table (no header line)") from None
        except UnicodeDecodeError:
            raise
        except ValueError as e:  # pandas' ParserError and friends
            raise InputError(f"{path}: cannot parse as a table: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    df.columns = [str(c) for c in df.columns]
    return df.fillna("")  # short rows


def _pick_column(df: pd.DataFrame, wanted: str | None, candidates: Iterable[str], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in df.columns:
            raise InputError(f"{path}: no column '{wanted}' (columns: {', '.join(df.columns)})")
        return wanted
    lower = {c.lower(): c for c in df.columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    raise InputError(f"{path}: cannot find the {what} column (columns: {', '.join(df.columns)}); name it explicitly")


def set_aside_invalid(ids: list[str], seqs: list[str], strip_gaps: bool = False
                      ) -> tuple[list[int], list[str], list[tuple[str, str]]]:
    """(kept indices, their cleaned sequences, [(id, reason)] of the records set aside).

    What ``--skip-invalid`` does: a record that :func:`clean_sequence` rejects, or a repeat of an
    id already seen, is set aside with the reason instead of stopping the run.
    """
    kept, clean, rejected, seen = [], [], [], set()
    for i, (rid, seq) in enumerate(zip(ids, seqs)):
        if rid in seen:
            rejected.append((rid, "duplicate id (the first record with this id is kept)"))
            continue
        seen.add(rid)
        try:
            clean.append(clean_sequence(rid, seq, strip_gaps))
        except InputError as e:
            rejected.append((rid, str(e).split(": ", 1)[-1]))
            continue
        kept.append(i)
    return kept, clean, rejected


def sequences_to_anndata(ids: list[str], seqs: list[str], source: str = "input", strip_gaps: bool = False,
                         obs: pd.DataFrame | None = None, skip_invalid: bool = False) -> ad.AnnData:
    """Validate ids and sequences and wrap them in an AnnData with an empty (n x 0) X.

    With ``skip_invalid`` bad records are set aside (:func:`set_aside_invalid`) and listed in
    ``uns['rejected']`` (``id``, ``reason``) instead of raising.
    """
    import anndata as ad
    import pandas as pd

    if not ids:
        raise InputError(f"{source}: no sequences found")
    for n, i in enumerate(ids, 1):
        if not i.strip():
            raise InputError(f"{source}: record {n} has an empty id")
    rejected: list[tuple[str, str]] = []
    if skip_invalid:
        kept, clean, rejected = set_aside_invalid(ids, seqs, strip_gaps)
        ids = [ids[i] for i in kept]
        obs = obs.iloc[kept] if obs is not None else None
        if not ids:
            raise InputError(f"{source}: every record is invalid (first: '{rejected[0][0]}': {rejected[0][1]})")
    else:
        _check_unique(ids, source)
        clean = [clean_sequence(i, s, strip_gaps) for i, s in zip(ids, seqs)]
    _refuse_nucleotides(clean, source)
    frame = pd.DataFrame({K.SEQUENCE: clean, K.LENGTH: [len(s) for s in clean]}, index=pd.Index(ids, name=None))
    if obs is not None:
        for col in obs.columns:
            frame[col] = obs[col].to_numpy()
    frame.index = frame.index.astype(str)
    adata = ad.AnnData(X=np.zeros((len(ids), 0), dtype=np.float32), obs=frame)
    adata.uns["source"] = str(source)
    if rejected:
        adata.uns["rejected"] = {"id": [r[0] for r in rejected], "reason": [r[1] for r in rejected]}
    return adata


def _refuse_nucleotides(seqs: list[str], source: str) -> None:
    """Refuse input in which every sequence is DNA/RNA-like: embedding it as protein is meaningless.

    Needs at least 30 residues and three different bases overall, so short peptides such as 'GATA'
    or poly-alanine pass; real protein sets never consist of A, C, G, T/U and N alone.
    """
    letters: set[str] = set()
    total = 0
    for s in seqs:
        if not NUCLEOTIDES.issuperset(s):
            return
        letters.update(s)
        total += len(s)
    if total >= 30 and len(letters - {"N"}) >= 3:
        raise InputError(f"{source}: every sequence consists of A, C, G, T/U and N only: this looks like "
                         "nucleotide input; protlens embeds proteins (translate it first, e.g. seqkit translate)")


def read_sequences(path: str | Path, id_col: str | None = None, seq_col: str | None = None,
                   label_cols: list[str] | None = None, strip_gaps: bool = False,
                   skip_invalid: bool = False) -> ad.AnnData:
    """Read FASTA (plain/.gz, multi-line, CRLF) or CSV/TSV into a validated AnnData.

    Tables need an id and a sequence column (auto-detected by name unless given); ``label_cols``
    (default: every other column) go to ``obs``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    kind = _base_suffix(path)
    if kind in {".csv", ".tsv", ".tab"}:
        df = _read_table(path)
        icol = _pick_column(df, id_col, ["id", "name", "entry", "accession"], "id", path)
        scol = _pick_column(df, seq_col, ["sequence", "seq"], "sequence", path)
        rest = [c for c in df.columns if c not in (icol, scol)] if label_cols is None else label_cols
        missing = [c for c in rest if c not in df.columns]
        if missing:
            raise InputError(f"{path}: no column(s) {', '.join(missing)}")
        obs = df[rest].replace("", np.nan)
        return sequences_to_anndata(df[icol].astype(str).tolist(), df[scol].tolist(), str(path), strip_gaps, obs,
                                    skip_invalid=skip_invalid)
    records = list(iter_fasta(path))
    if not records and kind not in {".fa", ".fasta", ".faa", ".fas", ".fna", ""}:
        raise InputError(f"{path}: unknown format '{kind}' (expected FASTA, CSV or TSV)")
    return sequences_to_anndata([r[0] for r in records], [r[1] for r in records], str(path), strip_gaps,
                                skip_invalid=skip_invalid)


def detect_id_column(df: pd.DataFrame, ids, source: str) -> str:
    """The column of a labels table whose values are the sequence ids.

    The column matching the most ids is taken when it is the only one matching at least half as
    many (so 'Manning_Name' wins over a gene-name column that shares some names); otherwise the
    user is asked for ``--id-col`` with the counts.
    """
    ids = set(map(str, ids))
    hits = {c: int(df[c].astype(str).isin(ids).sum()) for c in df.columns}
    best = max(hits.values(), default=0)
    if best == 0:
        raise InputError(f"{source}: no column's values match the sequence ids (columns: {', '.join(df.columns)}); "
                         "name the id column with --id-col")
    close = [c for c, h in hits.items() if h * 2 >= best]
    if len(close) > 1:
        shown = ", ".join(f"'{c}' ({hits[c]})" for c in close)
        raise InputError(f"{source}: several columns match the sequence ids ({shown} of {len(ids)}); "
                         "name the id column with --id-col")
    return close[0]


def join_labels(adata: ad.AnnData, labels: str | Path | pd.DataFrame, id_col: str | None = None,
                columns: list[str] | None = None) -> dict[str, list[str]]:
    """Join a labels table into ``adata.obs`` by id, in place.

    Returns the ids missing on each side (``{"no_label": [...], "no_sequence": [...]}``) so the
    caller reports them; nothing is dropped.
    """
    import pandas as pd

    if isinstance(labels, pd.DataFrame):
        df, src = labels.astype(str), "labels"
    else:
        src = str(labels)
        if not Path(labels).exists():
            raise InputError(f"{labels}: file not found")
        df = _read_table(Path(labels))
    icol = _pick_column(df, id_col, [], "id", Path(src)) if id_col is not None else detect_id_column(
        df, adata.obs_names, src)
    _check_unique(df[icol].astype(str).tolist(), src)
    df = df.set_index(df[icol].astype(str)).drop(columns=[icol])
    cols = list(df.columns) if columns is None else columns
    for c in cols:
        if c not in df.columns:
            raise InputError(f"{src}: no column '{c}' (columns: {', '.join(df.columns)})")
        if c in (K.SEQUENCE, K.LENGTH):
            raise InputError(f"{src}: label column '{c}' would overwrite a protlens column")
        adata.obs[c] = df[c].replace("", np.nan).reindex(adata.obs_names).to_numpy()
    have = set(df.index)
    ids = set(adata.obs_names)
    return {
        "no_label": [i for i in adata.obs_names if i not in have],
        "no_sequence": sorted(have - ids),
    }


class WriteError(InputError):
    """An output could not be written (disk full, permission denied, ...); the message names the path."""


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or creation inside ``folder`` durable (POSIX needs the directory fsynced too)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The file and its folder are fsynced before and after the rename, so after a crash ``path`` holds
    either the old content or the complete new one. An ``OSError`` while writing (disk full,
    permission denied) becomes a one-line :class:`WriteError` naming ``path``. A temp file left by a
    killed write matches :func:`remove_stray_temps`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should get the user's usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except OSError as e:
        reason = e.strerror or (str(e).splitlines() or [type(e).__name__])[0]
        raise WriteError(f"{path}: cannot write ({reason})") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_free_space(path: str | Path, nbytes: int) -> None:
    """Refuse to start an HDF5 write that cannot fit: HDF5 reports a full disk late (at close, or by
    crashing the process) instead of raising, so this one-line error comes first. ``nbytes`` is the
    data size; 10% plus 1 MB are added for the format's overhead."""
    path = Path(path)
    import shutil

    need = int(nbytes * 1.1) + (1 << 20)
    free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    if free < need:
        raise WriteError(f"{path}: cannot write (needs about {need / 1e6:.0f} MB, {free / 1e6:.0f} MB free)")


def remove_stray_temps(path: str | Path) -> list[Path]:
    """Delete temp files that killed :func:`atomic_path` writes of ``path`` left behind.

    Call it only while holding the output's lock (``protlens._lock``): another writer's live temp
    file would match too.
    """
    path = Path(path)
    pattern = _tmp_name(path)
    stray = [p for p in path.parent.glob(f".{path.name}.*.tmp") if pattern.fullmatch(p.name)] \
        if path.parent.is_dir() else []
    for p in stray:
        p.unlink(missing_ok=True)
    return stray


def _sanitize_uns(obj):
    """h5ad cannot store None or tuples in uns: map them to storable values recursively."""
    if isinstance(obj, dict):
        return {str(k): _sanitize_uns(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        items = [_sanitize_uns(v) for v in obj]
        if all(isinstance(v, (int, float, np.number)) for v in items) or all(isinstance(v, str) for v in items):
            return np.asarray(items)
        return {str(i): v for i, v in enumerate(items)}
    if isinstance(obj, (Path, str)):
        return str(obj)  # also plain-ifies str subclasses such as torch's TorchVersion
    return obj


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    """Write an AnnData atomically (a killed write never leaves a truncated file); ``X`` must be finite."""
    x = adata.X
    if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating) and x.size and not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InputError(f"{path}: not written: X of record '{adata.obs_names[row]}' holds NaN or inf")
    adata.uns = _sanitize_uns(dict(adata.uns))
    check_free_space(path, sum(getattr(a, "nbytes", 0) for a in [x, *adata.obsm.values(), *adata.layers.values()])
                     + adata.obs.memory_usage(deep=True).sum())
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
        _faults.point("h5ad")


def read_h5ad(path: str | Path) -> ad.AnnData:
    """Read an h5ad, refusing in one line a missing or non-AnnData file, duplicate obs_names and
    invalid residues in ``obs['sequence']``."""
    import warnings

    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*obs_names.*not unique", category=UserWarning)
            adata = ad.read_h5ad(path)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise InputError(f"{path}: not a readable .h5ad file ({(str(e).splitlines() or [''])[0]})") from None
    _check_unique([str(i) for i in adata.obs_names], str(path))
    if K.SEQUENCE in adata.obs:
        seqs = adata.obs[K.SEQUENCE].astype(str)
        bad = ~seqs.str.fullmatch(f"[{''.join(sorted(ALLOWED))}]+")
        if bad.any():
            rid = str(adata.obs_names[int(np.flatnonzero(bad.to_numpy())[0])])
            clean_sequence(rid, seqs[rid])  # names the character and position
            raise InputError(f"{path}: record '{rid}': obs['{K.SEQUENCE}'] is not upper-case protein letters")
    return adata


def residue_key(record_id: str) -> str:
    """HDF5-safe dataset name for any FASTA header ('/' and '.' would otherwise mean groups/paths)."""
    return quote(record_id, safe="").replace(".", "%2E") or "%00"


def residue_id(key: str) -> str:
    """Inverse of :func:`residue_key`."""
    return "" if key == "%00" else unquote(key)


def write_residues(path: str | Path, arrays: dict[str, np.ndarray], group: str = "") -> None:
    """Append per-residue arrays (one dataset per record, escaped keys) to a sidecar HDF5."""
    import h5py

    with h5py.File(path, "a") as f:
        g = f.require_group(group) if group else f
        for rid, arr in arrays.items():
            key = residue_key(rid)
            if key in g:
                del g[key]
            g.create_dataset(key, data=arr)


def read_residues(path: str | Path, ids: Iterable[str], group: str = "") -> list[np.ndarray]:
    """Per-residue arrays for ``ids`` from a sidecar HDF5; names the first missing record."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: per-residue file not found")
    out = []
    with h5py.File(path, "r") as f:
        g = f[group] if group else f
        for rid in ids:
            key = residue_key(rid)
            if key not in g:
                raise InputError(f"record '{rid}': no per-residue array in {path}{'/' + group if group else ''}")
            out.append(g[key][()])
    return out


def read_input(path: str | Path, labels: str | Path | None = None, id_col: str | None = None,
               label_cols: list[str] | None = None, strip_gaps: bool = False,
               skip_invalid: bool = False) -> ad.AnnData:
    """Sequences plus an optional labels table, with ids missing on either side reported as a warning."""
    import warnings

    adata = read_sequences(path, strip_gaps=strip_gaps, skip_invalid=skip_invalid)
    if labels is not None:
        missing = join_labels(adata, labels, id_col=id_col, columns=label_cols)
        for side, what in (("no_label", "sequences without a label row"), ("no_sequence", "label rows without a sequence")):
            ids = missing[side]
            if ids:
                shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
                warnings.warn(f"{labels}: {len(ids)} {what}: {shown}", stacklevel=2)
        adata.uns["labels_missing"] = {k: len(v) for k, v in missing.items()}
    return adata
