"""protlens.train: losses, label filling, masking, batching, trainer (decrease, resume, DDP), export, toy, distill."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, load_model
from protlens.train.config import TrainConfig, make_config, parse_flag_overrides
from protlens.train.data import (
    Collator, LabelVocab, fill_labels, mask_tokens, plan_epoch, read_corpus, shard_step,
)
from protlens.train.module import community_loss

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def synthetic_corpus(path: Path, n_fam: int = 6, per_fam: int = 8, length: int = 40, seed: int = 0) -> Path:
    """Families = noisy copies of a random ancestor; 2 families per superfamily; a few unlabelled rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_fam):
        anc = rng.choice(AA, length)
        for m in range(per_fam):
            s = anc.copy()
            flip = rng.random(length) < 0.1
            s[flip] = rng.choice(AA, flip.sum())
            fam, sf = f"cath:1.{f // 2}.1.{f}", f"cath:1.{f // 2}.1"
            if m == 0:
                fam = ""  # superfamily only: family filled in from it
            rows.append((f"p{f}_{m}", "".join(s), fam, sf))
    for u in range(4):
        rows.append((f"u{u}", "".join(rng.choice(AA, length)), "", ""))
    pd.DataFrame(rows, columns=["id", "sequence", "family", "superfamily"]).to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture()
def corpus(tmp_path) -> Path:
    return synthetic_corpus(tmp_path / "corpus.tsv")


def tiny_cfg(corpus: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(corpus), out_dir=str(out), num_layers=2, hidden_size=32, num_heads=4, crop=64,
                max_tokens=6 * 66, lr=3e-3, eval_every=0, log_every=1, progress=False, save_every_min=0,
                threads=1, ece_holdout_frac=0.1, eval_max_seqs=8, resume="never")
    base.update(kw)
    return TrainConfig(**base)


def losses(out: Path, key: str = "loss") -> list[float]:
    with open(out / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh)]


# --- losses -------------------------------------------------------------------------------------
def test_in_batch_softmax_matches_hand_computation():
    # proteins 0 and 2 share family 5: the batch has two candidate nodes {1, 5}, not three
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    nodes = torch.zeros(8, 2)
    nodes[1] = torch.tensor([0.0, 1.0])
    nodes[5] = torch.tensor([1.0, 1.0])
    target = torch.tensor([5, 1, 5])
    got = community_loss(z, nodes, target, candidates=torch.tensor([1, 5]))
    # scores vs (node1, node5): p0 (0, 1), p1 (2, 2), p2 (0.5, 1)
    want = [-math.log(math.e / (1 + math.e)), -math.log(math.e**2 / (2 * math.e**2)),
            -math.log(math.e / (math.e**0.5 + math.e))]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


def test_full_softmax_normalised_with_temperature():
    z = torch.tensor([[3.0, 0.0]])
    nodes = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    got = community_loss(z, nodes, torch.tensor([0]), normalize=True, temperature=0.5)
    cos = np.array([1.0, 0.0, -1.0]) / 0.5
    np.testing.assert_allclose(got.item(), -(cos[0] - np.log(np.exp(cos).sum())), rtol=1e-6)


# --- data ---------------------------------------------------------------------------------------
def test_fill_labels_follows_published_rule():
    rng = np.random.default_rng(0)
    assert fill_labels(["f1"], ["s1"], rng) == ("f1", "s1")
    assert fill_labels([], [], rng) == (None, None)
    # no family: one of the superfamily labels, drawn anew at every read
    got = {fill_labels([], ["s1", "s2"], rng)[0] for _ in range(50)}
    assert got == {"s1", "s2"}
    fam, sf = fill_labels(["f1", "f2"], [], rng)
    assert fam in {"f1", "f2"} and sf in {"f1", "f2"}
    vocab = LabelVocab.from_frame(pd.DataFrame({"family": [[], ["f1"]], "superfamily": [["s1"], []]}))
    assert "s1" in vocab.families and "f1" in vocab.superfamilies  # fill-ins get nodes


def test_mask_tokens_80_10_10():
    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(4, 24), 20000)
    out, lab = mask_tokens(ids, rng, 0.15)
    picked = lab != -100
    assert picked.sum() == 3000
    frac_mask = (out[picked] == ESM_ALPHABET.mask_idx).mean()
    frac_same = (out[picked] == ids[picked]).mean()
    assert abs(frac_mask - 0.8) < 0.03 and 0.1 < frac_same < 0.13  # 10% kept + ~1/20 of the random ones
    assert (out[~picked] == ids[~picked]).all()
    out, lab = mask_tokens(ids, np.random.default_rng(0), 0.15, all_mask=True)  # evaluation: all <mask>
    assert (out[lab != -100] == ESM_ALPHABET.mask_idx).all() and (lab != -100).sum() == 3000


def test_token_budget_plan_and_shards():
    lengths = np.random.default_rng(0).integers(10, 200, 500)
    plan = plan_epoch(lengths, 2000, 4, seed=0, epoch=0)
    assert all(len(s) * lengths[s].max() <= 2000 and len(s) >= 4 for s in plan)
    assert len({i for s in plan for i in s}) == sum(len(s) for s in plan)
    parts = [m for r in range(2) for m in shard_step(plan[0], world=2, grad_accum=2, rank=r)]
    assert sorted(np.concatenate(parts)) == sorted(plan[0])


def test_long_sequences_are_cropped_and_bos_eos_added(tmp_path):
    c = Collator(["A" * 300, "C" * 20], [[], []], [[], []], None, crop=50)
    b = c([0, 1], (0, 0, 0))
    assert b.input_ids.shape == (2, 52)
    assert b.input_ids[0, 0] == ESM_ALPHABET.cls_idx and b.input_ids[0, 51] == ESM_ALPHABET.eos_idx
    assert b.input_ids[1, 21] == ESM_ALPHABET.eos_idx and b.input_ids[1, 22] == ESM_ALPHABET.pad_idx


def test_config_file_and_flags(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: x.tsv\nobjective:\n  objective: mlm\n  w: 0.3\n")
    cfg = make_config(TrainConfig, p, parse_flag_overrides(TrainConfig, ["--w", "0.5", "--no-progress", "--lr=1e-4"]))
    assert (cfg.objective, cfg.w, cfg.progress, cfg.lr) == ("mlm", 0.5, False, 1e-4)
    with pytest.raises(InputError, match="unknown option --lrr"):
        parse_flag_overrides(TrainConfig, ["--lrr", "1"])
    with pytest.raises(InputError, match="cannot read"):
        make_config(TrainConfig, None, {"max_steps": "ten"})


# --- trainer ------------------------------------------------------------------------------------
def test_losses_decrease_over_30_steps(corpus, tmp_path):
    from protlens.train.trainer import train

    res = train(tiny_cfg(corpus, tmp_path / "run", max_steps=30, delay_k=2))
    for key in ("mlm", "family", "superfamily"):
        curve = losses(tmp_path / "run", key)
        assert len(curve) == 30
        assert np.mean(curve[-5:]) < np.mean(curve[:5]) - 0.1, key
    assert res.metrics["ece_heldout"] < 25  # below uniform over the 25 amino-acid tokens
    assert (tmp_path / "run" / "tensorboard").exists() and (tmp_path / "run" / "splits.tsv").exists()


def test_resume_reproduces_the_loss_curve(corpus, tmp_path):
    from protlens.train.trainer import train

    train(tiny_cfg(corpus, tmp_path / "a", max_steps=6, delay_k=4))
    train(tiny_cfg(corpus, tmp_path / "b", max_steps=3, delay_k=4))
    train(tiny_cfg(corpus, tmp_path / "b", max_steps=6, delay_k=4, resume="auto"))
    np.testing.assert_allclose(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-6)


def test_export_is_loadable_with_heads_and_card(corpus, tmp_path):
    from safetensors.torch import load_file

    from protlens.train.trainer import train

    res = train(tiny_cfg(corpus, tmp_path / "run", max_steps=2, export_dtype="fp16"))
    plm = load_model(res.export_dir)
    assert plm.num_layers == 2 and plm.hidden_size == 32
    assert plm.max_residues == 64  # trained from scratch on 64-residue crops: that is its reach
    heads = load_file(str(res.export_dir / "protlens_heads.safetensors"))
    assert heads["family_nodes"].shape[0] == 6 + 3  # 6 families + 3 superfamilies filled in as families
    card = (res.export_dir / "MODEL_CARD.md").read_text()
    assert "ece_heldout" in card and "data_sha256" in card and '"seed": 0' in card


def test_mlm_only_and_graph_only_objectives(corpus, tmp_path):
    from protlens.train.trainer import train

    r1 = train(tiny_cfg(corpus, tmp_path / "m", max_steps=2, objective="mlm"))
    assert not (r1.export_dir / "protlens_heads.safetensors").exists()
    train(tiny_cfg(corpus, tmp_path / "g", max_steps=2, objective="graph", graph_softmax="full", graph_normalize=True,
                   graph_temperature=0.1))
    assert losses(tmp_path / "g", "mlm") == [0.0, 0.0]


def test_bad_inputs(corpus, tmp_path):
    from protlens.train.trainer import train

    with pytest.raises(InputError, match="unknown model"):
        train(tiny_cfg(corpus, tmp_path / "x", model="no-such-model"))
    with pytest.raises(InputError, match="no trainable weights"):
        train(tiny_cfg(corpus, tmp_path / "x", model="kmer"))
    unl = tmp_path / "unl.tsv"
    pd.DataFrame({"id": ["a", "b"], "sequence": ["ACDE", "KLMN"]}).to_csv(unl, sep="\t", index=False)
    with pytest.raises(InputError, match="needs family/superfamily labels"):
        train(tiny_cfg(unl, tmp_path / "x", objective="mlm+graph", ece_holdout_frac=0.0))
    empty = tmp_path / "empty.tsv"
    empty.write_text("id\tsequence\tfamily\tsuperfamily\n")
    with pytest.raises(InputError, match="no sequences"):
        read_corpus(empty)
    with pytest.raises(InputError, match="crop"):
        train(tiny_cfg(corpus, tmp_path / "x", crop=5000))
    with pytest.raises(InputError, match="delay_k"):
        train(tiny_cfg(corpus, tmp_path / "x", delay_k=0))


def test_cli_train_with_config_file(corpus, tmp_path):
    from typer.testing import CliRunner

    from protlens.cli import app

    cfg = tmp_path / "r.toml"
    cfg.write_text(f'[data]\ndata = "{corpus}"\nout_dir = "{tmp_path / "cli"}"\ncrop = 64\n'
                   "[model]\nnum_layers = 1\nhidden_size = 16\nnum_heads = 2\n")
    r = CliRunner().invoke(app, ["train", str(cfg), "--max-steps", "2", "--max-tokens", "400", "--no-progress",
                                 "--eval-max-seqs", "4"])
    assert r.exit_code == 0, r.output
    assert "model in" in r.output and (tmp_path / "cli" / "export" / "model.safetensors").exists()


def test_toy_cpbc_separates_fine_categories(tmp_path):
    from protlens.train.toy import plot_toy, toy_cpbc

    res = toy_cpbc(steps=800)
    assert res.points.shape == (120, 2) and res.fine_centres.shape == (30, 2) and res.coarse_centres.shape == (10, 2)
    assert res.fine_purity >= 0.95 and res.coarse_purity >= 0.95
    assert res.loss[-1] < 0.1 * res.loss[0]
    plot_toy(res, tmp_path / "toy.png")
    assert (tmp_path / "toy.png").stat().st_size > 10_000


def test_distill_produces_a_loadable_student(corpus, tmp_path):
    from protlens.train.config import DistillConfig
    from protlens.train.distill import distill, layer_map
    from protlens.train.trainer import train

    assert layer_map(2, 6) == [0, 3, 6]
    teacher = train(tiny_cfg(corpus, tmp_path / "t", max_steps=10, objective="mlm")).export_dir
    res = distill(DistillConfig(teacher=str(teacher), data=str(corpus), out_dir=str(tmp_path / "s"), student_layers=1,
                                student_hidden=16, student_heads=2, crop=64, max_tokens=400, max_steps=8, log_every=1,
                                progress=False, threads=1, lr=3e-3))
    curve = pd.read_csv(tmp_path / "s" / "metrics.csv")
    assert curve["loss"].iloc[-3:].mean() < curve["loss"].iloc[:3].mean()
    assert (curve["attention"] > 0).all()
    student = load_model(res.export_dir)
    assert (student.num_layers, student.hidden_size) == (1, 16)
    # the student keeps the teacher's split: same held-out sequences, none of them trained on
    t_set = pd.read_csv(teacher / "training_set.tsv.gz", sep="\t", dtype=str).set_index("id")["split"]
    s_set = pd.read_csv(res.export_dir / "training_set.tsv.gz", sep="\t", dtype=str).set_index("id")["split"]
    assert s_set.to_dict() == t_set.to_dict() and (s_set == "ece_holdout").any()
    assert res.metrics["ece_heldout"] < 33  # below uniform even over the whole vocabulary


# --- one ECE: the trainer and distillation score like protlens._ece --------------------------------
PAPER_AA = "ACDEFGHIKLMNPQRSTVWYXBUZO"


def _bias_head(hf, seed: int = 0) -> np.ndarray:
    """Constant, non-uniform logits (decoder weight zeroed); non-amino-acid tokens get large logits."""
    bias = np.random.default_rng(seed).normal(0, 1.5, hf.lm_head.bias.shape[0])
    aa = [ESM_ALPHABET.tok_to_idx[a] for a in PAPER_AA]
    bias[np.setdiff1d(np.arange(len(bias)), aa)] += 4.0
    with torch.no_grad():
        hf.lm_head.decoder.weight.zero_()
        hf.lm_head.bias.copy_(torch.tensor(bias, dtype=hf.lm_head.bias.dtype))
    return bias


def _hand_ece(bias: np.ndarray, counts: dict[str, int]) -> float:
    z = {a: math.exp(bias[ESM_ALPHABET.tok_to_idx[a]]) for a in PAPER_AA}
    tot = sum(z.values())
    nll = sum(n * -math.log(z[a] / tot) for a, n in counts.items())
    return math.exp(nll / sum(counts.values()))


def test_trainer_and_distill_ece_match_the_hand_computation(corpus, tmp_path):
    """Held-out homopolymers: whatever positions are picked, the targets are known, so ECE is computable by hand."""
    from protlens.train.distill import masked_ece
    from protlens.train.trainer import Trainer

    tr = Trainer(tiny_cfg(corpus, tmp_path / "run", max_steps=1))
    bias = _bias_head(tr.module.hf)
    seqs = ["A" * 20, "C" * 40, "W" * 7]  # round(0.15 n) picked: 3, 6 and 1 residues
    tr.ece_collator = Collator(seqs, [[]] * 3, [[]] * 3, None, crop=64, mask_prob=0.15, all_mask=True)
    tr.ece_batches = [np.array([0, 1]), np.array([2])]
    want = _hand_ece(bias, {"A": 3, "C": 6, "W": 1})
    assert tr.evaluate_ece() == pytest.approx(want, rel=1e-5)
    assert masked_ece(tr.module.hf, tr.ece_collator, tr.ece_batches, (0, 99), "cpu") == pytest.approx(want, rel=1e-5)


def test_trainer_ece_is_the_masked_forward_pass(corpus, tmp_path):
    """Random weights: the trainer's number equals a direct computation on its own masked held-out batch."""
    from protlens.train.trainer import Trainer

    tr = Trainer(tiny_cfg(corpus, tmp_path / "run", max_steps=1))
    hf = tr.module.hf.eval()
    aa = [ESM_ALPHABET.tok_to_idx[a] for a in PAPER_AA]
    nll = []
    for idx in tr.ece_batches:
        b = tr.ece_collator(idx, (tr.cfg.split_seed, 99), random_crop=False)
        picked = b.labels.ne(-100)
        assert (b.input_ids[picked] == ESM_ALPHABET.mask_idx).all()  # every picked residue is masked
        with torch.no_grad():
            logits = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        for r, c in zip(*torch.nonzero(picked, as_tuple=True)):
            lp = torch.log_softmax(logits[r, c, aa].double(), -1)
            nll.append(-float(lp[aa.index(int(b.labels[r, c]))]))
    assert tr.evaluate_ece() == pytest.approx(math.exp(np.mean(nll)), rel=1e-4)


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(corpus, tmp_path):
    """2 gloo processes x 1 micro-batch == 1 process x 2 micro-batches (same global batch)."""
    if shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("torchrun not installed next to python")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    common = ["train", "--data", str(corpus), "--num-layers", "2", "--hidden-size", "32", "--num-heads", "4",
              "--crop", "64", "--max-tokens", "200", "--max-steps", "4", "--log-every", "1", "--eval-every", "2",
              "--eval-max-seqs", "8", "--no-progress", "--threads", "1", "--lr", "3e-3", "--resume", "never",
              "--delay-k", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "protlens.cli", *common, "--out-dir", str(tmp_path / "one"),
                    "--grad-accum", "2"], check=True, env=env, capture_output=True)
    subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29561", "-m", "protlens.cli", *common,
                    "--out-dir", str(tmp_path / "two")], check=True, env=env, capture_output=True)
    for key in ("loss", "mlm", "family", "superfamily", "ece_heldout"):
        a = pd.read_csv(tmp_path / "one" / "metrics.csv")[key].dropna().to_numpy()
        b = pd.read_csv(tmp_path / "two" / "metrics.csv")[key].dropna().to_numpy()
        np.testing.assert_allclose(b, a, rtol=1e-5, err_msg=key)


# --- delayed superfamily synchronisation and the clustering-head choice ----------------------------
def test_superfamily_nodes_move_only_every_kth_step_by_the_summed_gradient(corpus, tmp_path):
    """K = 3: the nodes stay put for two steps, then take one AdamW step on the sum of three steps' gradients."""
    from protlens.train.trainer import Trainer

    tr = Trainer(tiny_cfg(corpus, tmp_path / "run", objective="graph", delay_k=3, max_steps=3))
    sf, fam = tr.module.superfamily_nodes, tr.module.family_nodes
    per_backward: list[torch.Tensor] = []
    sf.register_hook(lambda g: per_backward.append(g.detach().clone()))  # each backward's own gradient
    plan = plan_epoch(tr.train_lengths, tr.tokens_per_step, tr.min_seqs, 0, 0)
    start = sf.detach().clone()
    for step in range(3):
        fam_before = fam.detach().clone()
        tr.train_step(plan[step], (0, 0, step))
        assert not torch.equal(fam.detach(), fam_before)  # protein -> family links update every step
        if step < 2:
            assert not tr.sync_superfamilies(step)
            assert torch.equal(sf.detach(), start)
    total = torch.stack(per_backward).sum(0)
    assert len(per_backward) >= 3 and torch.allclose(sf.grad, total, atol=1e-7)
    assert tr.sync_superfamilies(2) and sf.grad is None
    # AdamW's first step (bias-corrected, no weight decay on nodes): -lr * g / (|g| + eps), elementwise
    want = -tr.cfg.lr * total / (total.abs() + 1e-8)
    torch.testing.assert_close(sf.detach() - start, want, rtol=1e-4, atol=1e-7)


def test_cluster_head_none_scores_the_pooled_protein_vector(corpus, tmp_path):
    from protlens.train.module import residue_mean
    from protlens.train.trainer import Trainer

    tr = Trainer(tiny_cfg(corpus, tmp_path / "run", cluster_head="none", max_steps=1))
    b = tr.collator(np.arange(4), (0, 0, 0))
    hidden = tr.module.encode(b.input_ids, b.attention_mask)
    n = b.attention_mask.sum(1) - 2  # residues between BOS and EOS (masked ones included)
    by_hand = torch.stack([hidden[i, 1 : int(n[i]) + 1].mean(0) for i in range(4)])
    torch.testing.assert_close(tr.module.protein_vectors(hidden, b.input_ids), by_hand)
    torch.testing.assert_close(residue_mean(hidden, b.input_ids), by_hand)
    with pytest.raises(InputError, match="cluster_dim must be 0"):
        Trainer(tiny_cfg(corpus, tmp_path / "x", cluster_head="none", cluster_dim=8))


def test_exported_linear_head_is_reloaded_for_bench(corpus, tmp_path):
    from protlens.bench._common import BenchModel
    from protlens.train.module import load_cluster_head
    from protlens.train.trainer import train

    res = train(tiny_cfg(corpus, tmp_path / "run", cluster_head="linear", cluster_dim=8, max_steps=2))
    plm = load_model(res.export_dir)
    head = load_cluster_head(res.export_dir, plm.hidden_size)
    assert isinstance(head, torch.nn.Linear) and head.weight.shape == (8, 32)
    seqs = ["MKTAYIAKQRQISFVK", "ACDEFGHIKLMNPQRSTVWY"]
    plain = BenchModel("m", plm).pooled(seqs)
    through = BenchModel("m", plm, head=head).pooled(seqs)
    np.testing.assert_allclose(through, plain @ head.weight.detach().numpy().T + head.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert load_cluster_head(train(tiny_cfg(corpus, tmp_path / "m", objective="mlm", max_steps=1)).export_dir,
                             32) is None


@pytest.mark.parametrize("command", ["train", "distill"])
def test_help_lists_every_option_once_with_a_description(command):
    """Each config field appears as exactly one ``--flag TYPE (default ...): description`` line."""
    import dataclasses
    import re

    from typer.testing import CliRunner

    from protlens.cli import app
    from protlens.train.config import DistillConfig

    cls = TrainConfig if command == "train" else DistillConfig
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"}).output
    assert out.count("Usage:") == 1
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        lines = [line for line in out.splitlines() if re.search(rf"{flag} [A-Z]+ \(default [^)]*\): \S", line)]
        assert len(lines) == 1, (flag, out)
