"""ESM-1b / ESM-1v layout (learned positions, embedding layer norm, 1024-token limit) held to
fair-esm's ProteinBertModel and transformers' EsmModel/EsmForMaskedLM at 1e-4, and the ESM-1v ensemble."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from protlens.bench._common import BenchModel
from protlens.bench.mutation import score_variants
from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, EsmEnsemble, EsmPLM, esm1b_config, load_model
from protlens.pp import embed_sequences

esm = pytest.importorskip("esm")

AA = "ACDEFGHIKLMNPQRSTVWY"
RNG = np.random.default_rng(7)
MAX_POSITIONS = 64  # fair-esm's args.max_positions: 64 tokens, 62 residues


def rand_seqs(lengths):
    return ["".join(RNG.choice(list(AA), n)) for n in lengths]


def tokens(seqs):
    toks, mask = ESM_ALPHABET.batch(seqs)
    return torch.from_numpy(toks), torch.from_numpy(mask)


def _perturb(model, seed):
    """Random weights everywhere (layer norms too), so every parameter's role is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


def fairesm_esm1b_pt(path, seed=0, emb_layer_norm_before=True, token_dropout=True):
    """A tiny ESM-1b-layout checkpoint as fair-esm publishes them (``args`` namespace, fairseq names),
    and fair-esm's own model read from it by ``esm.pretrained``'s loader."""
    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    args = argparse.Namespace(arch="roberta_large", layers=2, embed_dim=32, ffn_embed_dim=64, attention_heads=4,
                              max_positions=MAX_POSITIONS, emb_layer_norm_before=emb_layer_norm_before,
                              token_dropout=token_dropout)
    model = _perturb(esm.model.esm1.ProteinBertModel(args, alphabet), seed)
    state = {("encoder." if k.startswith("lm_head") else "encoder.sentence_encoder.") + k: v
             for k, v in model.state_dict().items() if not k.startswith("contact_head")}
    saved_args = argparse.Namespace(arch="roberta_large", encoder_layers=2, encoder_embed_dim=32,
                                    encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                                    max_positions=MAX_POSITIONS, token_dropout=token_dropout)
    torch.save({"args": saved_args, "model": state}, path)
    with torch.serialization.safe_globals([argparse.Namespace]):  # tied tensors come back sharing storage
        data = torch.load(path, weights_only=True)
    ref, _ = esm.pretrained.load_model_and_alphabet_core("esm1b_tiny", data)
    return ref.eval()


def hf_esm1b_dir(path, seed=0, emb_layer_norm_before=True, token_dropout=True):
    """A tiny random transformers EsmForMaskedLM of the ESM-1b layout saved as an HF folder."""
    from transformers import EsmForMaskedLM

    torch.manual_seed(seed)
    cfg = esm1b_config(2, 32, 4, max_positions=MAX_POSITIONS + 2, token_dropout=token_dropout,
                       emb_layer_norm_before=emb_layer_norm_before, intermediate_size=64)
    model = _perturb(EsmForMaskedLM(cfg), seed)
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("ln_before, token_dropout", [(True, True), (False, True), (True, False)])
def test_fairesm_esm1b_checkpoint_matches_fairesm(tmp_path, ln_before, token_dropout):
    ref = fairesm_esm1b_pt(tmp_path / "esm1b.pt", emb_layer_norm_before=ln_before, token_dropout=token_dropout)
    plm = load_model(tmp_path / "esm1b.pt")
    assert plm.absolute and plm.max_residues == MAX_POSITIONS - 2
    seqs = rand_seqs([7, 40, 12])
    toks, mask = tokens(seqs)
    toks[1, 11] = ESM_ALPHABET.mask_idx  # a masked token exercises token dropout
    with torch.no_grad():
        want = ref(toks, repr_layers=[0, 1, 2])
        got = plm(toks, repr_layers=[0, 1, 2], return_logits=True)
        hf_logits = plm.hf(input_ids=toks, attention_mask=mask.long()).logits  # transformers on the same weights
    for layer in (0, 1, 2):
        assert (got.hidden[layer] - want["representations"][layer])[mask].abs().max() <= 1e-4, layer
    assert (got.logits - want["logits"])[mask].abs().max() <= 1e-4
    assert (hf_logits - want["logits"])[mask].abs().max() <= 1e-4


@pytest.mark.parametrize("ln_before", [True, False])
def test_hf_esm1b_folder_matches_transformers(tmp_path, ln_before):
    from transformers import EsmModel

    ref = hf_esm1b_dir(tmp_path / "hf", emb_layer_norm_before=ln_before)
    plm = load_model(tmp_path / "hf")
    toks, mask = tokens(rand_seqs([5, 62, 30]))
    with torch.no_grad():
        got = plm(toks, repr_layers=[1, 2], return_logits=True)
        want = ref(input_ids=toks, attention_mask=mask.long(), output_hidden_states=True)
        base = EsmModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).eval()
        last = base(input_ids=toks, attention_mask=mask.long()).last_hidden_state
    assert (got.logits - want.logits)[mask].abs().max() <= 1e-4
    assert (got.hidden[2] - last)[mask].abs().max() <= 1e-4
    assert (got.hidden[1] - want.hidden_states[1])[mask].abs().max() <= 1e-4


def test_token_limit_is_refused_and_windows_stay_inside(tmp_path):
    fairesm_esm1b_pt(tmp_path / "esm1b.pt")
    plm = load_model(tmp_path / "esm1b.pt")
    toks, _ = tokens(rand_seqs([MAX_POSITIONS - 1]))  # 65 tokens: one more than the positions cover
    with pytest.raises(InputError, match="65 tokens exceed the 64"):
        plm(toks)
    seq = rand_seqs([150])[0]
    res = embed_sequences(plm, [seq], per_residue=True, overlap=16, progress=False)  # windows of max_residues
    assert res.n_windowed == 1 and res.per_residue[plm.num_layers][0].shape == (150, 32)


def test_masked_marginal_score_matches_fairesm(tmp_path):
    ref = fairesm_esm1b_pt(tmp_path / "esm1b.pt", seed=3)
    plm = load_model(tmp_path / "esm1b.pt")
    wt = rand_seqs([40])[0]
    variants = [[(3, wt[3], "W")], [(10, wt[10], "A"), (20, wt[20], "C")], [(39, wt[39], "K")]]
    got = score_variants(BenchModel("t", plm), wt, variants, "masked-marginals")
    want = []
    for v in variants:  # eq. 14 computed from fair-esm's logits directly
        toks, _ = tokens([wt])
        for p, _, _ in v:
            toks[0, p + 1] = ESM_ALPHABET.mask_idx
        with torch.no_grad():
            lp = torch.log_softmax(ref(toks)["logits"][0], -1)
        idx = ESM_ALPHABET.tok_to_idx
        want.append(sum(float(lp[p + 1, idx[m]] - lp[p + 1, idx[w]]) for p, w, m in v))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_ensemble_scores_are_the_members_mean(tmp_path):
    folders = []
    for seed in range(3):
        hf_esm1b_dir(tmp_path / f"m{seed}", seed=seed)
        folders.append(str(tmp_path / f"m{seed}"))
    ens = load_model("ensemble:" + ",".join(folders))
    assert isinstance(ens, EsmEnsemble)
    wt = rand_seqs([120])[0]  # longer than the members' reach: scored in windows
    variants = [[(5, wt[5], "W")], [(60, wt[60], "A"), (64, wt[64], "C")], [(119, wt[119], "K")]]
    for strategy, seq, vs in (("masked-marginals", wt, variants), ("wt-marginals", wt, variants),
                              ("pseudo-likelihood", wt[:12], [[(3, wt[3], "W")]])):
        got = score_variants(BenchModel("ens", ens), seq, vs, strategy)
        members = [score_variants(BenchModel(f, load_model(f)), seq, vs, strategy) for f in folders]
        np.testing.assert_allclose(got, np.mean(members, axis=0), atol=1e-5)
        assert np.ptp(np.array(members)[:, 0]) > 1e-3  # the members really differ
    # readers that only see logits (ECE) get the members' mean log-probabilities
    toks = torch.from_numpy(ESM_ALPHABET.batch([wt[:60]])[0])
    with torch.no_grad():
        direct = ens(toks, repr_layers=()).logits
        want = torch.stack([torch.log_softmax(m(toks, repr_layers=(), return_logits=True).logits, -1)
                            for m in ens.members]).mean(0)
    assert (direct - want).abs().max() <= 1e-6
    with pytest.raises(InputError, match="ensemble for mutation scoring"):
        embed_sequences(ens, ["ACDE"], progress=False)


def test_esm1v_names_every_missing_member(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(InputError, match=r"ensemble 'esm1v': 5 of 5 members not available "
                                         r"\(facebook/esm1v_t33_650M_UR90S_1, .*_UR90S_5\)"):
        load_model("esm1v")


def test_esm1_and_other_fairesm_archs_are_refused(tmp_path):
    path = tmp_path / "esm1.pt"
    torch.save({"args": argparse.Namespace(arch="protein_bert_base"), "model": {"x": torch.zeros(1)}}, path)
    with pytest.raises(InputError, match="esm1.pt: fair-esm architecture 'protein_bert_base' is not supported"):
        load_model(path)


def test_lone_esm1b_safetensors_needs_config(tmp_path):
    from safetensors.torch import save_file

    model = hf_esm1b_dir(tmp_path / "hf")
    (tmp_path / "lone").mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if "decoder" not in k},
              tmp_path / "lone" / "w.safetensors")
    with pytest.raises(InputError, match="need a config.json"):
        load_model(tmp_path / "lone" / "w.safetensors")


def test_unexpected_and_missing_weights_refused_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    hf_esm1b_dir(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(weights)
    save_file({**state, "classifier.dense.weight": torch.zeros(2, 32)}, weights)
    with pytest.raises(InputError, match="hf: weights do not match.*unexpected classifier.dense.weight"):
        load_model(tmp_path / "hf")
    save_file({k: v for k, v in state.items() if "position_embeddings" not in k}, weights)
    with pytest.raises(InputError, match="missing esm.embeddings.position_embeddings.weight"):
        load_model(tmp_path / "hf")


def test_hf_conversion_is_strict(tmp_path):
    hf_esm1b_dir(tmp_path / "hf")
    plm = load_model(tmp_path / "hf")
    plm.net.esm.embeddings.add_module("extra", torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="does not take these weights.*unexpected.*extra"):
        plm.hf


def test_direct_hf_model_wrapping_is_the_same_model(tmp_path):
    ref = hf_esm1b_dir(tmp_path / "hf")
    a, b = EsmPLM(ref, "a", "test"), load_model(tmp_path / "hf")
    assert a.weights_hash == b.weights_hash
    toks, _ = tokens(rand_seqs([20]))
    with torch.no_grad():
        assert (a(toks, return_logits=True).logits - b(toks, return_logits=True).logits).abs().max() <= 1e-4


def test_esm1b_checkpoint_loads_without_transformers(tmp_path):
    """Embedding an ESM-1b/ESM-1v file must not pay transformers' import, as for ESM-2."""
    import subprocess
    import sys

    fairesm_esm1b_pt(tmp_path / "esm1b.pt")
    hf_esm1b_dir(tmp_path / "hf")
    code = (
        "import sys, torch\n"
        "from protlens.models import load_model\n"
        f"for src in ({str(tmp_path / 'esm1b.pt')!r}, {str(tmp_path / 'hf')!r}):\n"
        "    with torch.no_grad():\n"
        "        load_model(src)(torch.tensor([[0, 5, 6, 7, 2]]), return_logits=True)\n"
        "print('transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
