"""Benchmark tasks: hand-computed metrics on tiny synthetic cases, and a --smoke run of the whole suite."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from protlens.bench import random_init_model, resolve_tasks, run_bench
from protlens.bench._common import BenchModel, CappedPCA, stratified_half_split
from protlens.bench.ece import AA_TOKENS, NgramLM, mask_positions, model_ece, ngram_ece
from protlens.bench.family import linear_probe
from protlens.bench.function import multiple_choice, nearest_neighbour_accuracy, prefixes
from protlens.bench.homology import hit_at_k
from protlens.bench.ppi import _assign_splits, pair_features
from protlens.bench.similarity import sample_pairs
from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, KmerEmbedder

TOK = ESM_ALPHABET.tok_to_idx


#: The paper's amino-acid vocabulary, spelled out here independently of protlens._ece.
PAPER_AA = "ACDEFGHIKLMNPQRSTVWYXBUZO"


def biased_head(plm, seed: int = 0) -> np.ndarray:
    """Make every position's logits the same fixed, non-uniform bias vector; return it.

    The decoder weight is zeroed, so the logits are the bias whatever the input. Non-amino-acid tokens
    (<mask>, <cls>, ...) get large logits, so a softmax over the whole vocabulary would score very
    differently from the 25-token one.
    """
    from protlens.models import ESM_ALPHABET

    bias = np.random.default_rng(seed).normal(0, 1.5, plm.hf.lm_head.bias.shape[0])
    aa_ids = [ESM_ALPHABET.tok_to_idx[a] for a in PAPER_AA]
    other = np.setdiff1d(np.arange(len(bias)), aa_ids)
    bias[other] += 4.0
    with torch.no_grad():
        plm.hf.lm_head.decoder.weight.zero_()
        plm.hf.lm_head.bias.copy_(torch.tensor(bias, dtype=plm.hf.lm_head.bias.dtype))
    return bias


def hand_ece(bias: np.ndarray, targets: str) -> float:
    """exp(mean -log p(target)) with p the softmax of ``bias`` over the 25 amino-acid tokens only."""
    from protlens.models import ESM_ALPHABET

    z = {a: float(np.exp(bias[ESM_ALPHABET.tok_to_idx[a]])) for a in PAPER_AA}
    total = sum(z.values())
    return float(np.exp(np.mean([-np.log(z[a] / total) for a in targets])))


def test_ece_on_a_biased_model_matches_the_hand_computation(tiny_esm):
    bias = biased_head(tiny_esm)
    seqs = ["MKTAYIAKQRQISFVK", "ACDEFGHIKLMNPQRSTVWY"]
    masks = [np.array([0, 5]), np.array([1, 2, 19])]
    want = hand_ece(bias, "MI" + "CDY")
    assert model_ece(BenchModel("tiny", tiny_esm), seqs, masks) == pytest.approx(want, rel=1e-5)
    assert abs(want - 25) > 1  # a uniform-model test could not tell a wrong target from a right one


def test_ece_reads_the_masked_positions_of_a_real_forward_pass(tiny_esm):
    """Independent re-computation with the HF model: mask by hand, softmax over the 25 columns, read targets."""
    from protlens.models import ESM_ALPHABET

    seqs = ["MKTAYIAKQRQISFVK", "ACDEFGHIKLMNPQRSTVWY"]
    masks = [np.array([3, 9]), np.array([0, 10, 17])]
    aa_cols = [ESM_ALPHABET.tok_to_idx[a] for a in PAPER_AA]
    nll = []
    for s, pos in zip(seqs, masks):
        ids = [ESM_ALPHABET.cls_idx] + [ESM_ALPHABET.tok_to_idx[c] for c in s] + [ESM_ALPHABET.eos_idx]
        for p in pos:
            ids[p + 1] = ESM_ALPHABET.mask_idx
        with torch.no_grad():
            logits = tiny_esm.hf(input_ids=torch.tensor([ids])).logits[0]
        for p in pos:
            lp = torch.log_softmax(logits[p + 1, aa_cols].double(), -1)
            nll.append(-float(lp[PAPER_AA.index(s[p])]))
    assert model_ece(BenchModel("tiny", tiny_esm), seqs, masks) == pytest.approx(np.exp(np.mean(nll)), rel=1e-4)


def test_mask_positions_pick_15_percent_at_least_one():
    masks = mask_positions([16, 20, 3, 100], np.random.default_rng(0))
    assert [len(m) for m in masks] == [2, 3, 1, 15]  # round(0.15 n), at least one
    assert all(len(set(m)) == len(m) and (np.diff(m) > 0).all() for m in masks)


def test_ece_scores_long_sequences_within_the_model_reach(tiny_esm):
    """Reach 10 over 24 residues: windows (0,10) (5,15) (10,20) (14,24); each masked position's
    amino-acid log-probabilities are averaged over the windows holding it (the uniform window rule)."""
    tiny_esm.max_residues = 10  # a model trained on 10-residue crops
    long_seq = "MKTAYIAKQRQISFVKSHFSRQLE"
    pos = np.array([2, 12, 21])
    holding = {2: [(0, 10)], 12: [(5, 15), (10, 20)], 21: [(14, 24)]}
    aa_ids = [TOK[a] for a in AA_TOKENS]
    reads = {p: [] for p in pos.tolist()}
    for start, end in [(0, 10), (5, 15), (10, 20), (14, 24)]:
        inside = [p for p in pos.tolist() if start <= p < end]
        toks = torch.tensor([[TOK["<cls>"], *(TOK[a] for a in long_seq[start:end]), TOK["<eos>"]]])
        toks[0, [p - start + 1 for p in inside]] = TOK["<mask>"]
        with torch.no_grad():
            logits = tiny_esm.hf(input_ids=toks).logits[0]
        for p in inside:
            reads[p].append(torch.log_softmax(logits[p - start + 1], -1)[aa_ids].numpy())
    assert {p: len(r) for p, r in reads.items()} == {p: len(h) for p, h in holding.items()}
    nll = []
    for p, rows in reads.items():
        lp = np.mean(rows, axis=0)
        nll.append(np.logaddexp.reduce(lp) - lp[AA_TOKENS.index(long_seq[p])])
    got = model_ece(BenchModel("tiny", tiny_esm), [long_seq], [pos])
    assert got == pytest.approx(np.exp(np.mean(nll)), rel=1e-5)


def test_ngram_learns_a_periodic_sequence():
    train = ["ACDEF" * 40] * 3
    test = ["ACDEF" * 10]
    masks = [np.array([7, 18, 33])]
    uni = ngram_ece(NgramLM(1).fit(train), test, masks)
    four = ngram_ece(NgramLM(4).fit(train), test, masks)
    # add-one unigram: p = (120 + 1) / (600 + 25) for every residue
    assert uni == pytest.approx(625 / 121)
    assert four < 1.2 < uni


def test_ngram_context_backs_off_at_masks():
    lm = NgramLM(4).fit(["ACDEF" * 40])
    seq = ["ACDEFACDEF"]
    # position 8 (E) preceded by masked position 7: context shrinks to nothing -> unigram-like
    both = ngram_ece(lm, seq, [np.array([7, 8])])
    alone = ngram_ece(lm, seq, [np.array([8])])
    assert alone < 1.2 < both


def test_hit_at_k_hand_case():
    # query 0 ranks 1, 2, 3 and its only positive is 3 (miss at 1); query 3 ranks its positive 0 first
    sim = np.array([[1, .9, .8, .7], [.9, 1, .1, .2], [.8, .1, 1, .3], [.7, .2, .3, 1.]])
    pos = np.zeros((4, 4), bool)
    pos[0, 3] = pos[3, 0] = True
    ignore = np.zeros((4, 4), bool)
    hits, n = hit_at_k(sim, pos, ignore, ks=(1, 5))
    assert n == 2 and hits == {1: 0.5, 5: 1.0}
    ignore[0, 1] = ignore[0, 2] = True  # leaving out the better-ranked ones makes query 0 a hit at 1
    hits, _ = hit_at_k(sim, pos, ignore, ks=(1,))
    assert hits[1] == 1.0


def test_similarity_pairs_are_labelled_correctly():
    labels = np.array(list("aaabbbcc"))
    pairs = sample_pairs(labels, 5, np.random.default_rng(0))
    assert (pairs["same"] == 1).sum() == 5 and (pairs["same"] == 0).sum() == 5
    assert ((labels[pairs["i"]] == labels[pairs["j"]]) == pairs["same"].astype(bool)).all()
    assert (pairs["i"] < pairs["j"]).all() and not pairs.duplicated(["i", "j"]).any()


def test_nearest_neighbour_levels_and_choices():
    x = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1]])
    ec = np.array(["1.2.3.4", "2.1.1.1", "1.2.3.5", "2.1.9.9"])
    train = np.array([True, True, False, False])
    assert nearest_neighbour_accuracy(x, ec, train) == [1.0, 1.0, 0.5, 0.0]
    assert prefixes("3.5.2.6") == ["3", "3.5", "3.5.2", "3.5.2.6"]
    cands = multiple_choice(ec, train, ["1.2.3.4", "1.2.3.5", "2.1.1.1", "2.1.9.9", "4.4.4.4", "5.5.5.5", "6.1.1.1"],
                            np.random.default_rng(0))
    assert [c[0] for c in cands] == ["1.2.3.5", "2.1.9.9"]
    assert all(len(set(c)) == 4 for c in cands)


def test_ppi_features_symmetric_and_disjoint_split_leak_free():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    np.testing.assert_array_equal(pair_features(a, b), pair_features(b, a))
    prots = [f"p{i}" for i in range(40)]
    pairs = pd.DataFrame([(prots[i], prots[j]) for i in range(40) for j in range(i + 1, 40) if (i * j) % 7 == 1],
                         columns=["a", "b"])
    df = _assign_splits(pairs.assign(label=np.arange(len(pairs)) % 2), np.random.default_rng(1))
    test_prot = set(df.loc[df["disjoint"] == "test", ["a", "b"]].values.ravel())
    train_prot = set(df.loc[df["disjoint"] == "train", ["a", "b"]].values.ravel())
    assert test_prot and train_prot and not test_prot & train_prot
    assert 0.05 < (df["random"] == "test").mean() < 0.15


def test_linear_probe_separable_and_split():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = np.eye(4)[y] * 5 + rng.normal(scale=0.3, size=(40, 4))
    tr = stratified_half_split(y, rng)
    assert tr.sum() == 20 and all(tr[y == c].sum() == 5 for c in range(4))
    assert linear_probe(np.hstack([x, rng.normal(size=(40, 20))]), y, tr, 0) == 1.0
    assert CappedPCA(256).fit(x).transform(x).shape == (40, 4)


def test_resolve_tasks_and_unknown_name():
    assert resolve_tasks("all")[0] == "ece" and len(resolve_tasks(["all"])) == 9
    assert resolve_tasks(["homology,ece"]) == ["ece", "homology"]
    with pytest.raises(InputError, match="unknown task 'foldseek'"):
        resolve_tasks(["ece", "foldseek"])


def test_random_init_baseline_copies_architecture(tiny_esm_dir):
    a = random_init_model(str(tiny_esm_dir), seed=3)
    b = random_init_model(str(tiny_esm_dir), seed=3)
    assert (a.num_layers, a.hidden_size, a.num_heads) == (2, 32, 4)
    assert a.weights_hash == b.weights_hash != random_init_model(str(tiny_esm_dir), seed=4).weights_hash
    assert random_init_model("esm2_t6_8M_UR50D").hidden_size == 320
    with pytest.raises(InputError, match="no transformer"):
        random_init_model("kmer")


@pytest.mark.slow
@pytest.mark.shared_data
def test_smoke_suite(shared_data, tiny_esm_dir, tmp_path):
    """Every task on tiny subsets for a tiny transformer and the composition baseline."""
    out = tmp_path / "bench"
    df = run_bench([str(tiny_esm_dir), "kmer1"], "all", out, smoke=True, data_dir=shared_data, progress=False)
    for f in ("results.csv", "results.md", "mutation_skipped.tsv", "splits/ece.tsv", "splits/ppi_shs27k.tsv",
              "splits/family_ten.tsv", "splits/homology.tsv", "splits/function.tsv"):
        assert (out / f).exists(), f
    assert len(list((out / "figures").glob("*.png"))) >= 6
    tiny = df[df["model"] == str(tiny_esm_dir)]
    assert set(tiny["task"]) == set(resolve_tasks("all")) and tiny["metric"].ne("skipped").all()
    skips = df[(df["model"] == "kmer1") & (df["metric"] == "skipped")]
    assert set(skips["task"]) == {"ece", "mutation"} and skips["note"].str.contains("no masked-LM logits").all()
    base = df[df["model"].str.startswith("baseline:")].set_index("model")
    assert 1 < base.loc["baseline:4-gram", "value"] < 25 and 1 < base.loc["baseline:unigram", "value"] < 25
    acc = df[df["metric"].str.endswith("_acc") & df["value"].notna()]["value"]
    assert ((acc >= 0) & (acc <= 1)).all()
    md = (out / "results.md").read_text()
    assert f"| {tiny_esm_dir} |" in md and "| kmer1 |" in md and "kmer1 / ece: model has no masked-LM logits" in md
    assert f"- {tiny_esm_dir}: leakage unknown" in md and "- kmer1: untrained" in md
    # same seed, same numbers
    again = run_bench(["kmer1"], ["homology", "similarity"], tmp_path / "again", smoke=True, data_dir=shared_data,
                      progress=False)
    first = df[(df["model"] == "kmer1") & df["task"].isin(["homology", "similarity"])]
    np.testing.assert_array_equal(again[again["model"] == "kmer1"]["value"].to_numpy(), first["value"].to_numpy())


def test_cli_unknown_task_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "protlens", "bench", "-m", "kmer1", "--tasks", "nope", "-o",
                           str(tmp_path / "b")], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr


def test_kmer_has_no_logits():
    assert not BenchModel("kmer", KmerEmbedder()).has_logits


def test_ece_vocabulary_is_every_residue_letter_of_the_esm_alphabet():
    from protlens.models import ESM_TOKENS

    letters = {t for t in ESM_TOKENS if len(t) == 1 and t.isalpha()}
    assert set(AA_TOKENS) == letters == set(PAPER_AA) and len(AA_TOKENS) == len(set(AA_TOKENS))


def test_uniform_reference_equals_a_constant_logit_model(tiny_esm):
    """The reference row 'uniform' and the model path agree on a model whose 25 amino-acid logits are equal."""
    from protlens.bench.ece import reference_eces

    with torch.no_grad():
        tiny_esm.hf.lm_head.decoder.weight.zero_()
        tiny_esm.hf.lm_head.bias.fill_(0.3)
    seqs = ["MKTAYIAKQRQISFVK"]
    masks = [np.array([2, 7])]
    got = model_ece(BenchModel("tiny", tiny_esm), seqs, masks)
    assert got == pytest.approx(reference_eces(seqs, masks, ["ACDEFGHIKL"])["uniform"][0], rel=1e-6)
    assert got == pytest.approx(len(PAPER_AA), rel=1e-6)


# --- leakage: training proteins of the benchmarked models are kept out ------------------------------
def _model_with_training_set(folder, rows):
    from protlens._training_set import training_frame, write_training_set

    folder.mkdir(parents=True)
    ids, splits, seqs = zip(*rows)
    write_training_set(folder, training_frame(ids, splits, [[]] * len(ids), [[]] * len(ids), seqs))
    return folder


def test_leakage_statuses_and_matching_by_id_or_sequence(tmp_path, tiny_esm_dir):
    from types import SimpleNamespace

    from protlens.bench.leakage import Leakage, drop_training, report_lines

    a = _model_with_training_set(tmp_path / "a", [("p1", "train", "MKTAYIAK"), ("p2", "ece_holdout", "ACDEFG"),
                                                  ("p3", "ece_holdout", "KLMNPQ"), ("p4", "label_holdout", "WWYY")])
    b = _model_with_training_set(tmp_path / "b", [("p2", "ece_holdout", "ACDEFG"), ("p3", "train", "KLMNPQ")])
    names = [str(a), str(b), "kmer", "random:esm2_t6_8M_UR50D", str(tiny_esm_dir)]
    lk = Leakage.from_models(names)
    assert lk.status[str(a)].startswith("trained: its 1 training") and "untrained" in lk.status["kmer"]
    assert "untrained" in lk.status["random:esm2_t6_8M_UR50D"] and "leakage unknown" in lk.status[str(tiny_esm_dir)]
    assert lk.ece_holdout == ["p2"]  # held out by both, trained on by neither
    # p1 by id; a renamed copy of p3's sequence by sequence; p4 (held-out label) and an unseen protein stay
    frame = pd.DataFrame({"id": ["p1", "x3", "p4", "new"], "sequence": ["MKTAYIAK", "klmnpq", "WWYY", "GGGG"]})
    ctx = SimpleNamespace(leakage=lk, excluded={}, heldout=None)
    assert drop_training(ctx, "pool", frame)["id"].tolist() == ["p4", "new"] and ctx.excluded == {"pool": (2, 2)}
    md = "\n".join(report_lines(ctx, names, ["family", "ppi"]))
    assert "leakage unknown" in md and "| ppi | – | not filtered" in md


def test_no_training_metadata_means_nothing_is_dropped(tiny_esm_dir):
    from types import SimpleNamespace

    from protlens.bench.leakage import Leakage, drop_training

    ctx = SimpleNamespace(leakage=Leakage.from_models(["kmer", str(tiny_esm_dir)]), excluded={})
    frame = pd.DataFrame({"id": ["p1"], "sequence": ["MKTAYIAK"]})
    assert drop_training(ctx, "pool", frame).equals(frame) and ctx.excluded == {} and ctx.leakage.ece_holdout is None


def test_bundled_model_carries_its_training_split():
    from protlens._training_set import read_training_set
    from protlens.models import bundled_path

    table = read_training_set(bundled_path("protlens-small"))
    meta = __import__("json").loads((bundled_path("protlens-small") / "metrics.json").read_text())
    assert table["split"].value_counts().to_dict() == meta["split_counts"]
    assert table["id"].is_unique and table["sequence_sha1"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_probes_see_every_dimension_unless_a_pca_cap_is_asked(tmp_path):
    from sklearn.linear_model import RidgeCV

    from protlens.bench._common import Context, head
    from protlens.bench.mutation import scope

    x = np.random.default_rng(0).normal(size=(30, 300))
    assert head(RidgeCV(), 0).fit(x, x[:, 0]).named_steps["ridgecv"].coef_.shape == (300,)
    assert head(RidgeCV(), 0, pca_cap=5).fit(x, x[:, 0]).named_steps["ridgecv"].coef_.shape == (5,)
    assert scope(Context(out=tmp_path, data_dir=tmp_path)) == "full assays"
    assert "(--fast)" in scope(Context(out=tmp_path, data_dir=tmp_path, fast=True))


def test_a_pool_emptied_by_exclusion_is_reported_not_crashed(tmp_path):
    """Every enzyme is some model's training protein: the EC tasks say so instead of failing."""
    from protlens.bench import function
    from protlens.bench._common import Context
    from protlens.bench.leakage import Leakage

    data = tmp_path / "data" / "function"
    data.mkdir(parents=True)
    seqs = ["".join(np.random.default_rng(i).choice(list("ACDEFGHIKLMNPQRSTVWY"), 30)) for i in range(24)]
    ids = [f"E{i}" for i in range(24)]
    pd.DataFrame({"Entry": ids, "EC number": [f"1.1.{i % 2}.{i}" for i in range(24)], "Sequence": seqs}).to_csv(
        data / "enzymes_ec_split10.tsv", sep="\t", index=False)
    model = _model_with_training_set(tmp_path / "m", [(i, "train", s) for i, s in zip(ids, seqs)])
    ctx = Context(out=tmp_path / "out", data_dir=tmp_path / "data", leakage=Leakage.from_models([str(model)]))
    ctx.sizes["enzymes"] = 24
    rows = function.run(ctx, BenchModel("kmer1", KmerEmbedder((1,))))
    assert rows[0].metric == "skipped" and "training proteins" in rows[0].note and ctx.excluded["enzymes"] == (24, 0)
