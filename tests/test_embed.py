"""The embedding engine: pooling, layers, windows, batching invariance, OOM back-off, resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from protlens import _keys as K
from protlens.errors import InputError
from protlens.io import read_h5ad, read_residues, sequences_to_anndata
from protlens.pp import _embed, embed, embed_sequences, plan_batches, window_spans

AA = list("ACDEFGHIKLMNPQRSTVWY")


def rand_seqs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AA, n)) for n in lengths]


def manual_mean(model, seq, layer=-1):
    toks, _ = model.alphabet.batch([seq])
    with torch.no_grad():
        h = model(torch.from_numpy(toks), repr_layers=[layer]).hidden[model.resolve_layer(layer)]
    return h[0, 1 : len(seq) + 1].mean(0).numpy(), h[0, 0].numpy()


def test_window_spans_cover_and_overlap():
    assert window_spans(10, 20, 5) == [(0, 10)]
    spans = window_spans(2500, 1022, 256)
    assert spans[0][0] == 0 and spans[-1][1] == 2500
    assert all(e - s == 1022 for s, e in spans)
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # consecutive windows overlap


def test_plan_respects_token_budget_and_sorts():
    lengths = [5, 300, 40, 41, 900, 7]
    plan = plan_batches(lengths, 1022, 256, max_tokens=1000)
    for batch in plan.batches:
        width = max(plan.chunks[c].end - plan.chunks[c].start for c in batch) + 2
        assert width * len(batch) <= 1000 or len(batch) == 1
    first = [plan.chunks[b[0]].end for b in plan.batches]
    assert first == sorted(first, reverse=True)
    assert sorted(c.seq for c in plan.chunks) == list(range(6))


def test_mean_and_bos_pooling_match_manual(tiny_esm):
    seqs = rand_seqs([3, 40, 17, 90])
    mean = embed_sequences(tiny_esm, seqs, progress=False).pooled[2]
    bos = embed_sequences(tiny_esm, seqs, pooling="bos", progress=False).pooled[2]
    for i, s in enumerate(seqs):
        m, b = manual_mean(tiny_esm, s)
        np.testing.assert_allclose(mean[i], m, atol=1e-5)
        np.testing.assert_allclose(bos[i], b, atol=1e-5)


def test_batching_does_not_change_results(tiny_esm):
    seqs = rand_seqs([3, 40, 17, 90, 200, 8, 8, 55])
    a = embed_sequences(tiny_esm, seqs, max_tokens=64, progress=False).pooled[2]
    b = embed_sequences(tiny_esm, seqs, max_tokens=100000, progress=False).pooled[2]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_layers_to_x_and_obsm(tiny_esm, tmp_path):
    seqs = rand_seqs([12, 30])
    adata = sequences_to_anndata(["a/1", "b"], seqs)
    embed(adata, tiny_esm, layers=[1, -1, 0], per_residue_file=tmp_path / "res.h5", progress=False)
    assert adata.X.shape == (2, 32)
    assert set(adata.obsm) == {K.layer_key(2), K.layer_key(0)}
    np.testing.assert_allclose(adata.X[0], manual_mean(tiny_esm, seqs[0], 1)[0], atol=1e-5)
    info = adata.uns[K.EMBED]
    assert info["layers"] == [1, 2, 0] and info["weights_hash"] == tiny_esm.weights_hash
    assert {"torch_version", "protlens_version", "window", "pooling"} <= set(info)
    assert info["max_tokens"] == 1024  # the CPU default batch budget, recorded as used
    res = read_residues(adata.uns[K.PER_RESIDUE], ["a/1", "b"], group="layer1")
    assert [r.shape for r in res] == [(12, 32), (30, 32)]
    np.testing.assert_allclose(res[0].mean(0), adata.X[0], atol=1e-5)


def test_long_sequences_windowed_not_truncated(tiny_esm):
    seqs = rand_seqs([1500, 50])
    r = embed_sequences(tiny_esm, seqs, per_residue=True, progress=False)
    assert r.n_windowed == 1
    res = r.per_residue[2][0]
    assert res.shape == (1500, 32)
    np.testing.assert_allclose(r.pooled[2][0], res.mean(0), atol=1e-5)
    # residues seen by a single window equal that window's own forward pass
    first, _ = manual_mean(tiny_esm, seqs[0][:1022])
    toks, _ = tiny_esm.alphabet.batch([seqs[0][:1022]])
    with torch.no_grad():
        win = tiny_esm(torch.from_numpy(toks)).hidden[2][0, 1:1023].numpy()
    np.testing.assert_allclose(res[:478], win[:478], atol=1e-5)  # 1500-1022 = 478 covered once
    trunc = embed_sequences(tiny_esm, seqs, truncate=True, progress=False)
    np.testing.assert_allclose(trunc.pooled[2][0], first, atol=1e-5)
    # one window wide enough: the same as a plain forward pass over all 1500 residues
    whole = embed_sequences(tiny_esm, seqs, window=1500, progress=False).pooled[2][0]
    np.testing.assert_allclose(whole, manual_mean(tiny_esm, seqs[0])[0], atol=1e-5)


def test_batch_results_do_not_pin_hidden_states(tiny_esm):
    """Kept arrays must own their memory: a view would hold each batch's whole hidden state."""
    seqs = ["MKTAYIAKQR", "ACDEFGHIKLMNPQ"]
    chunks = [_embed.Chunk(0, 0, 10), _embed.Chunk(1, 0, 14)]
    with torch.inference_mode():
        out = _embed._run_batch(tiny_esm, seqs, chunks, [2], torch.device("cpu"), [True, True])
    assert set(out) == {"bos2", "sum2", "res2_0", "res2_1"}
    for key in ("bos2", "res2_0", "res2_1"):
        assert out[key].flags.owndata, key
    assert out["res2_1"].shape == (14, tiny_esm.hidden_size)


def test_oom_batch_is_split(tiny_esm, monkeypatch):
    seqs = rand_seqs([20, 21, 22, 23, 1100])
    ref = embed_sequences(tiny_esm, seqs, per_residue=True, progress=False)
    real = _embed._run_batch
    calls = []

    def flaky(model, s, chunks, *a, **k):
        calls.append(len(chunks))
        if len(chunks) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(model, s, chunks, *a, **k)

    monkeypatch.setattr(_embed, "_run_batch", flaky)
    got = embed_sequences(tiny_esm, seqs, per_residue=True, progress=False)
    assert max(calls) > 1 and 1 in calls
    np.testing.assert_allclose(got.pooled[2], ref.pooled[2], atol=1e-6)
    for a, b in zip(got.per_residue[2], ref.per_residue[2]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_options(tiny_esm):
    with pytest.raises(InputError, match="unknown pooling"):
        embed_sequences(tiny_esm, ["MK"], pooling="max", progress=False)
    with pytest.raises(InputError, match="unknown dtype"):
        embed_sequences(tiny_esm, ["MK"], dtype="int4", progress=False)
    with pytest.raises(InputError, match="no per-residue"):
        embed_sequences("kmer", ["MKV"], per_residue=True, progress=False)


def test_kmer_model_through_engine():
    r = embed_sequences("kmer", ["MKVLA", "WWWW"], progress=False)
    assert list(r.pooled) == [0] and r.pooled[0].shape == (2, 8000)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "protlens.cli", *args], capture_output=True, text=True, **kw)


def test_cli_bad_input_one_line_exit_2(tmp_path):
    fa = tmp_path / "bad.fasta"
    fa.write_text(">ok\nMKV\n>broken\nMK1V\n")
    r = _cli("embed", str(fa), "-o", str(tmp_path / "o.h5ad"), "--model", "kmer")
    assert r.returncode == 2
    assert r.stderr.strip() == "protlens: error: record 'broken': invalid character '1' at position 3 (allowed: 20 standard amino acids and X B Z U O)"
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_identical_result(tiny_esm_dir, tmp_path):
    seqs = rand_seqs([int(n) for n in np.random.default_rng(1).integers(50, 400, 300)], seed=2)
    fa = tmp_path / "in.fasta"
    fa.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    common = ["--model", str(tiny_esm_dir), "--max-tokens", "512", "--checkpoint-every", "0", "--no-progress",
              "--per-residue"]
    ref_out = tmp_path / "ref.h5ad"
    assert _cli("embed", str(fa), "-o", str(ref_out), *common, str(tmp_path / "ref_res.h5")).returncode == 0

    out = tmp_path / "out.h5ad"
    parts = tmp_path / "out.h5ad.parts"
    proc = subprocess.Popen([sys.executable, "-m", "protlens.cli", "embed", str(fa), "-o", str(out), *common,
                             str(tmp_path / "res.h5")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.npz"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(list(parts.glob("part-*.npz")))
    assert n_parts >= 3 and not out.exists(), "the run should have been killed midway"
    r = _cli("embed", str(fa), "-o", str(out), *common, str(tmp_path / "res.h5"))
    assert r.returncode == 0, r.stderr
    assert not parts.exists()
    a, b = read_h5ad(out), read_h5ad(ref_out)
    np.testing.assert_array_equal(a.X, b.X)
    ra = read_residues(tmp_path / "res.h5", ["s0", "s299"], group="layer2")
    rb = read_residues(tmp_path / "ref_res.h5", ["s0", "s299"], group="layer2")
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(x, y)


def test_options_checked_before_the_model_is_loaded():
    """A string model name that does not exist is never reached: the option error comes first."""
    for kw, msg in [(dict(layers=[]), "give at least one layer"), (dict(window=0), "--window 0: must be >= 1"),
                    (dict(max_tokens=0), "--max-tokens 0: must be >= 8"),
                    (dict(window=50, overlap=50), "--overlap 50: must be >= 0 and <= 49"),
                    (dict(checkpoint_every=-1), "--checkpoint-every -1"),
                    (dict(device="tpu"), "unknown device 'tpu'")]:
        with pytest.raises(InputError, match=re.escape(msg)):
            embed_sequences("no/such/model", ["MK"], progress=False, **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_device_is_refused():
    with pytest.raises(InputError, match="no CUDA device on this machine"):
        _embed.resolve_device("cuda")


def test_library_resume_dir_removed_unless_kept(tiny_esm, tmp_path):
    """Library callers get the old behaviour (progress gone with the result); the CLI keeps it until its
    files are durable, and a rerun then computes nothing."""
    seqs = rand_seqs([30, 60, 90, 120], seed=5)
    ref = embed_sequences(tiny_esm, seqs, max_tokens=100, progress=False)
    embed_sequences(tiny_esm, seqs, max_tokens=100, resume_dir=tmp_path / "p", checkpoint_every=0, progress=False)
    assert not (tmp_path / "p").exists()
    kept = embed_sequences(tiny_esm, seqs, max_tokens=100, resume_dir=tmp_path / "k", checkpoint_every=0,
                           progress=False, keep_progress=True)
    n_parts = len(list((tmp_path / "k").glob("part-*.npz")))
    assert n_parts == len(plan_batches([len(s) for s in seqs], 1022, 256, 100).batches)
    calls = []
    original = _embed._run_batch
    try:
        _embed._run_batch = lambda *a, **k: calls.append(1) or original(*a, **k)
        again = embed_sequences(tiny_esm, seqs, max_tokens=100, resume_dir=tmp_path / "k", progress=False)
    finally:
        _embed._run_batch = original
    assert calls == [] and not (tmp_path / "k").exists()
    for r in (kept, again):
        np.testing.assert_array_equal(r.pooled[2], ref.pooled[2])


def test_non_finite_model_output_stops_the_run(tiny_esm, monkeypatch):
    seqs = rand_seqs([30, 40], seed=6)
    original = _embed._run_batch

    def broken(*args, **kw):
        out = original(*args, **kw)
        out["sum2"][-1, 0] = np.inf
        return out

    monkeypatch.setattr(_embed, "_run_batch", broken)
    with pytest.raises(InputError, match=r"NaN or inf for input record #1 \(try --dtype fp32\)"):
        embed_sequences(tiny_esm, seqs, dtype="bf16", progress=False)


def test_cpu_facts_are_read_at_run_time(tiny_esm_dir, tmp_path):
    """uns['embed']['cpu'] holds what this process's torch dispatches to: lowering the ISA with
    ATEN_CPU_CAPABILITY in a fresh process is what gets recorded (not a value fixed at build time)."""
    code = ("import sys, anndata as ad, pandas as pd\n"
            "from protlens.pp import embed\n"
            "a = ad.AnnData(obs=pd.DataFrame({'sequence': ['MKTAYIAKQR', 'GSHMLE']}, index=['a', 'b']))\n"
            f"embed(a, {str(tiny_esm_dir)!r}, progress=False)\n"
            "c = a.uns['embed']['cpu']\n"
            "print(c['torch_cpu_capability'], c['threads'])\n")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["DEFAULT", "1"]
