"""Input validation: every bad record gets a message naming it."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from protlens.errors import InputError
from protlens.io import (
    join_labels,
    read_h5ad,
    read_input,
    read_residues,
    read_sequences,
    residue_id,
    residue_key,
    write_h5ad,
    write_residues,
)


def test_fasta_multiline_crlf_lowercase_stop(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_bytes(b">s1 some description\r\nmkta\r\nYIAK*\r\n>s2\r\nACDE\r\n")
    a = read_sequences(p)
    assert list(a.obs_names) == ["s1", "s2"]
    assert a.obs["sequence"].tolist() == ["MKTAYIAK", "ACDE"]
    assert a.obs["length"].tolist() == [8, 4]


def test_fasta_gz(tmp_path):
    p = tmp_path / "a.fa.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(">x\nMKV\n>y\nWWW\n")
    assert read_sequences(p).obs["sequence"].tolist() == ["MKV", "WWW"]


def test_duplicate_ids_listed(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_text(">a\nMK\n>b\nMK\n>a\nMV\n>b\nMM\n")
    with pytest.raises(InputError, match=r"2 duplicate id\(s\): a, b"):
        read_sequences(p)


def test_empty_sequence(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_text(">a\nMK\n>empty\n>c\nMV\n")
    with pytest.raises(InputError, match="record 'empty': empty sequence"):
        read_sequences(p)


def test_bad_character_position(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_text(">a\nMK\n>bad\nMKJ\n")
    with pytest.raises(InputError, match="record 'bad': invalid character 'J' at position 3"):
        read_sequences(p)


def test_gaps_rejected_unless_stripped(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_text(">g\nMK-V.A\n")
    with pytest.raises(InputError, match="record 'g': gap character '-' at position 3"):
        read_sequences(p)
    assert read_sequences(p, strip_gaps=True).obs["sequence"].tolist() == ["MKVA"]


def test_csv_and_tsv_with_labels(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("id\tsequence\tfamily\n1\tMKV\tA\n2\tWWK\t\n")
    a = read_sequences(p)
    assert list(a.obs_names) == ["1", "2"]
    assert a.obs.loc["1", "family"] == "A" and a.obs["family"].isna().tolist() == [False, True]
    c = tmp_path / "b.csv"
    c.write_text("name,seq\nq,MKV\n")
    assert read_sequences(c).obs["sequence"].tolist() == ["MKV"]
    bad = tmp_path / "c.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(InputError, match="cannot find the id column"):
        read_sequences(bad)


def test_labels_join_reports_missing(tmp_path):
    f = tmp_path / "a.fasta"
    f.write_text(">a\nMK\n>b\nMV\n>c\nMM\n")
    lab = tmp_path / "l.csv"
    lab.write_text("name,family\na,F1\nb,F2\nz,F3\n")
    a = read_sequences(f)
    missing = join_labels(a, lab, id_col="name")
    assert missing == {"no_label": ["c"], "no_sequence": ["z"]}
    assert a.obs["family"].tolist()[:2] == ["F1", "F2"] and a.obs["family"].isna().iloc[2]
    with pytest.warns(UserWarning, match="1 sequences without a label row: c"):
        read_input(f, labels=lab, id_col="name")


def test_missing_file():
    with pytest.raises(InputError, match="file not found"):
        read_sequences("/nonexistent.fasta")


def test_h5ad_roundtrip_atomic(tmp_path):
    p = tmp_path / "a.fasta"
    p.write_text(">a\nMK\n>b\nMV\n")
    a = read_sequences(p)
    a.uns["embed"] = {"layers": [6], "note": None, "pair": (1, 2)}
    out = tmp_path / "o.h5ad"
    write_h5ad(a, out)
    b = read_h5ad(out)
    assert b.obs["sequence"].tolist() == ["MK", "MV"]
    assert list(b.uns["embed"]["pair"]) == [1, 2]
    assert not list(tmp_path.glob(".o.h5ad*"))  # no temp file left behind


@pytest.mark.parametrize("rid", ["sp|P12345|ABC_HUMAN", "a/b.c", "x y", ".", "..", ""])
def test_residue_keys_any_header(tmp_path, rid):
    key = residue_key(rid)
    assert "/" not in key and key not in (".", "..") and residue_id(key) == rid
    path = tmp_path / "r.h5"
    write_residues(path, {rid: np.ones((3, 2), dtype=np.float32)}, group="layer6")
    assert read_residues(path, [rid], group="layer6")[0].shape == (3, 2)
    with pytest.raises(InputError, match="record 'other'"):
        read_residues(path, ["other"], group="layer6")


# --- unreadable input: one InputError naming the file and what to do ---------------------------------

UNREADABLE = [
    ("bin.fasta", bytes(range(256)), "is not UTF-8 text"),
    ("plain-gz.fasta", gzip.compress(b">a\nMKV\n"), "is gzip-compressed but not named .gz (rename it to plain-gz.fasta.gz)"),
    ("text.fasta.gz", b">a\nMKV\n", "is named .gz but is not gzip-compressed"),
    ("cut.fasta.gz", gzip.compress("".join(f">s{i}\nMKVLW\n" for i in range(300)).encode())[:200],
     "truncated or damaged gzip file"),
    ("u16.fasta", ">a\nMKV\n".encode("utf-16"), "is UTF-16 text: save it as UTF-8 or ASCII"),
    ("latin.fasta", ">caf\xe9\nMKV\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9; latin-1 or binary?)"),
    ("x.fasta", b"\x89HDF\r\n\x1a\n" + bytes(100), "is an HDF5 file (.h5ad/.h5), not FASTA/CSV/TSV"),
    ("nul.fasta", b">a\nMK\x00V\n", "NUL byte: a binary file, not FASTA"),
    ("empty.csv", b"", "empty table (no header line)"),
    ("noid.csv", b"id,sequence\na,MKV\n,MKW\n", "record 2 has an empty id"),
    ("dna.fasta", b">g\nATGGCGTACGATCGATCGATGCTAGCTAGCTAG\n>h\nACGTNACGTU\n", "looks like nucleotide input"),
    ("ss.fasta", ">a\nMKßV\n".encode(), "record 'a': invalid character 'ß' at position 3"),
    ("nbsp.fasta", ">a\nMK\u00a0V\n".encode(), "record 'a': invalid character '\\xa0' at position 3"),
]


@pytest.mark.parametrize("name, data, message", UNREADABLE, ids=[u[0] for u in UNREADABLE])
def test_unreadable_input_one_line(tmp_path, name, data, message):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(InputError) as exc:
        read_sequences(p)
    text = str(exc.value)
    assert message in text and "\n" not in text


def test_directory_and_bom(tmp_path):
    with pytest.raises(InputError, match="is a directory, not a file"):
        read_sequences(tmp_path)
    p = tmp_path / "bom.fasta"
    p.write_bytes(b"\xef\xbb\xbf>a\nMKV\n")
    assert read_sequences(p).obs["sequence"].tolist() == ["MKV"]
    c = tmp_path / "bom.csv"
    c.write_bytes(b"\xef\xbb\xbfid,sequence\na,MKV\n")
    assert list(read_sequences(c).obs_names) == ["a"]


def test_short_or_low_complexity_peptides_are_not_nucleotides(tmp_path):
    """Only a whole input of A/C/G/T/U/N with >= 30 residues and 3 bases is refused."""
    p = tmp_path / "pep.fasta"
    p.write_text(">a\nGATA\n>b\n" + "A" * 60 + "\n>c\nACGTACGTACGTACGTACGTACGTACGTACGTM\n")
    assert read_sequences(p).n_obs == 3


def test_h5ad_duplicate_obs_names_and_bad_residues(tmp_path):
    import anndata as ad
    import pandas as pd

    with pytest.warns(UserWarning, match="not unique"):
        dup = ad.AnnData(X=np.zeros((2, 1), np.float32),
                         obs=pd.DataFrame({"sequence": ["MK", "MV"]}, index=["a", "a"]))
    dup.write_h5ad(tmp_path / "dup.h5ad")
    with pytest.raises(InputError, match="1 duplicate id"):
        read_h5ad(tmp_path / "dup.h5ad")
    bad = ad.AnnData(X=np.zeros((2, 1), np.float32), obs=pd.DataFrame({"sequence": ["MK", "M1V"]}, index=["a", "b"]))
    bad.write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(InputError, match="record 'b': invalid character '1' at position 2"):
        read_h5ad(tmp_path / "bad.h5ad")
    (tmp_path / "junk.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="not a readable .h5ad file"):
        read_h5ad(tmp_path / "junk.h5ad")


def test_write_h5ad_refuses_non_finite_x(tmp_path):
    import anndata as ad
    import pandas as pd

    a = ad.AnnData(X=np.array([[1.0], [np.nan]], dtype=np.float32), obs=pd.DataFrame(index=["a", "b"]))
    with pytest.raises(InputError, match="X of record 'b' holds NaN or inf"):
        write_h5ad(a, tmp_path / "o.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_write_error_names_the_path_and_leaves_no_temp(tmp_path):
    from protlens.io import WriteError, atomic_path

    target = tmp_path / "o.bin"
    with pytest.raises(WriteError, match=r"o\.bin: cannot write \(No space left on device\)"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_remove_stray_temps_only_ours(tmp_path):
    from protlens.io import atomic_path, remove_stray_temps

    ours = tmp_path / ".o.h5ad.k3j_9xq2.tmp"
    other = tmp_path / ".o.h5ad.bak.k3j_9xq2.tmp"
    ours.write_bytes(b"")
    other.write_bytes(b"")
    with atomic_path(tmp_path / "o.h5ad") as tmp:  # a temp name atomic_path really makes is matched
        stray_like = tmp.name
        assert remove_stray_temps(tmp_path / "o.h5ad") and not tmp.exists()
        tmp.write_bytes(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "o.h5ad"] and stray_like != other.name


# --- property: any bytes either parse into valid records or raise InputError ---------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from protlens.io import ALLOWED  # noqa: E402

_fasta_like = st.lists(st.one_of(
    st.sampled_from([b">", b">id", b">a b", b"\n", b"\r\n", b"MKV", b"mkv*", b"-", b"ACGT", b"\xef\xbb\xbf",
                     b",", b"id,sequence\n", b"\t", b"\x00", b"\xff", b"\xc3\x9f", b";c", b"\x1f\x8b"]),
    st.binary(max_size=12)), max_size=30).map(b"".join)


def _check_valid(a) -> None:
    ids = list(a.obs_names)
    assert ids and len(set(ids)) == len(ids) and all(i.strip() for i in ids)
    for s in a.obs["sequence"]:
        assert s and set(s) <= ALLOWED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_fasta_like, name=st.sampled_from(["x.fasta", "x.csv", "x.tsv", "x.fa.gz", "x.csv.gz", "x"]),
       compress=st.booleans())
def test_any_bytes_parse_or_raise_input_error(tmp_path, data, name, compress):
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if compress else data)
    try:
        a = read_sequences(p)
    except InputError as e:
        assert "\n" not in str(e)
    else:
        _check_valid(a)
