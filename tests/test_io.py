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
