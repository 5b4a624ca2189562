"""Realistic activations: the trained protlens-small held to transformers and fair-esm at 1e-4,
reduced precision against fp32 (bf16; int8 linear layers, also against a written-out int8
reference), windows against full context, resume after an interruption; and the dtype rules (fp16
refused on CPU, int8 refused off CPU, a caller's model never cast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, available_bundled, bundled_path, load_model
from protlens.models.esm import _int8_linear, _pack_int8
from protlens.io import sequences_to_anndata
from protlens.pp import _embed, embed, embed_sequences

AA = "ACDEFGHIKLMNPQRSTVWY"
# a human kinase domain stretch (PKA catalytic subunit, UniProt P17612, residues 1-350)
PKA = ("MGNAAAAKKGSEQESVKEFLAKAKEDFLKKWETPSQNTAQLDQFDRIKTLGTGSFGRVMLVKHKESGNHYAMKILDKQKVVKLKQIEHTLNEKRILQAVNFPFLVK"
       "LEFSFKDNSNLYMVMEYVPGGEMFSHLRRIGRFSEPHARFYAAQIVLTFEYLHSLDLIYRDLKPENLLIDQQGYIQVTDFGFAKRVKGRTWTLCGTPEYLAPE"
       "IILSKGYNKAVDWWALGVLIYEMAAGYPPFFADQPIQIYEKIVSGKVRFPSHFSSDLKDLLRNLLQVDLTKRFGNLKNGVNDIKNHKWFATTDWIAIYQRKVEA"
       "PFIPKFKGPGDTSNFDDYEEEEIRVSINEKCGKEFTEF")


@pytest.fixture(scope="module")
def small():
    if "protlens-small" not in available_bundled():
        pytest.skip("protlens-small is not shipped in this install")
    return load_model("protlens-small")


def _batch(seqs):
    toks, mask = ESM_ALPHABET.batch(seqs)
    return torch.from_numpy(toks), torch.from_numpy(mask)


def test_protlens_small_matches_transformers(small):
    """The file stores rotary inv_freq in fp16 (an export artefact: training used fp32 frequencies);
    transformers would use the rounded buffer (hidden states move by ~0.3 at magnitude ~40), fair-esm
    and protlens recompute it. Compared with the recomputed frequencies, as trained."""
    from transformers import EsmForMaskedLM

    ref = EsmForMaskedLM.from_pretrained(bundled_path("protlens-small"), dtype=torch.float32).eval()
    rot = ref.esm.rotary_embeddings
    stored = rot.inv_freq.clone()
    rot.inv_freq = type(rot).compute_default_rope_parameters(ref.config)[0]
    assert 0 < (stored - rot.inv_freq).abs().max() < 1e-3 * rot.inv_freq.max()  # fp16 rounding only
    toks, mask = _batch([PKA, PKA[:120], PKA[200:231]])
    with torch.no_grad():
        ours = small(toks, repr_layers=[3, -1], return_logits=True)
        want = ref(input_ids=toks, attention_mask=mask.long(), output_hidden_states=True)
    assert (ours.hidden[3] - want.hidden_states[3])[mask].abs().max() <= 1e-4
    assert (ours.logits - want.logits)[mask].abs().max() <= 1e-4


def test_protlens_small_matches_fairesm(small):
    esm = pytest.importorskip("esm")
    ref = esm.model.esm2.ESM2(num_layers=small.num_layers, embed_dim=small.hidden_size,
                              attention_heads=small.num_heads, alphabet=esm.data.Alphabet.from_architecture("ESM-1b"),
                              token_dropout=small.token_dropout).eval()
    fair_names = {"attention.self.query": "self_attn.q_proj", "attention.self.key": "self_attn.k_proj",
                  "attention.self.value": "self_attn.v_proj", "attention.output.dense": "self_attn.out_proj",
                  "attention.LayerNorm": "self_attn_layer_norm", "intermediate.dense": "fc1",
                  "output.dense": "fc2", "LayerNorm": "final_layer_norm"}
    state = {}
    for k, v in small.net.state_dict().items():
        if k.startswith("esm.encoder.layer."):
            i, rest = k[len("esm.encoder.layer."):].split(".", 1)
            mod, leaf = rest.rsplit(".", 1)
            state[f"layers.{i}.{fair_names[mod]}.{leaf}"] = v
        elif k == "esm.embeddings.word_embeddings.weight":
            state["embed_tokens.weight"] = v
        elif k.startswith("esm.encoder.emb_layer_norm_after."):
            state[k[len("esm.encoder."):]] = v
        elif k == "lm_head.decoder.weight":
            state["lm_head.weight"] = v
        elif k.startswith("lm_head."):
            state[k] = v
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all("contact_head" in k or "rot_emb" in k for k in missing)
    toks, mask = _batch([PKA, PKA[50:90]])
    toks[0, 10] = ESM_ALPHABET.mask_idx  # token dropout's rescaling on a trained model
    with torch.no_grad():
        want = ref(toks, repr_layers=[small.num_layers])
        ours = small(toks, repr_layers=[-1], return_logits=True)
    assert (ours.hidden[small.num_layers] - want["representations"][small.num_layers])[mask].abs().max() <= 1e-4
    assert (ours.logits - want["logits"])[mask].abs().max() <= 1e-4


def test_bf16_close_to_fp32_and_callers_model_untouched(small):
    before = small.weights_hash
    fp32 = embed_sequences(small, [PKA, PKA[:200]], per_residue=True, progress=False)
    bf16 = embed_sequences(small, [PKA, PKA[:200]], per_residue=True, dtype="bf16", progress=False)
    assert small.dtype == torch.float32 and small.weights_hash == before  # never cast, not even round-tripped
    layer = small.num_layers
    rel = np.linalg.norm(bf16.pooled[layer] - fp32.pooled[layer], axis=1) / np.linalg.norm(fp32.pooled[layer], axis=1)
    res = bf16.per_residue[layer][0] - fp32.per_residue[layer][0]
    res_rel = np.linalg.norm(res, axis=1) / np.linalg.norm(fp32.per_residue[layer][0], axis=1)
    # bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.4%); six layers of it stay within a few percent
    assert rel.max() < 0.03 and np.median(res_rel) < 0.05
    assert rel.max() > 0  # it really ran in bf16


def test_fp16_on_cpu_is_refused(small):
    with pytest.raises(InputError, match="--dtype fp16 is not supported on CPU"):
        embed_sequences(small, ["MKV"], dtype="fp16", device="cpu", progress=False)


def _reference_int8_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The int8 linear layer written out: weights symmetric int8 per output channel; activations
    asymmetric over the whole input, 7-bit; integer products, then rescaled."""
    sw = np.maximum(np.abs(w).max(1), 1e-12) / 127
    wq = np.clip(np.rint(w / sw[:, None]), -128, 127)
    lo, hi = min(x.min(), 0.0), max(x.max(), 0.0)
    sx = (hi - lo) / 127
    zp = np.clip(np.rint(-lo / sx), 0, 127)
    xq = np.clip(np.rint(x / sx + zp), 0, 255)
    return ((xq - zp) @ wq.T) * sx * sw + b


def test_int8_linear_matches_written_out_quantization():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 7, 16) * 3, torch.randn(24, 16) * 0.2, torch.randn(24)
    out = _int8_linear(x, _pack_int8(w, b), [7, 4]).numpy()
    for j, n in enumerate([7, 4]):  # one activation range per sequence, over its real tokens only
        ref = _reference_int8_linear(x[j, :n].double().numpy(), w.double().numpy(), b.double().numpy())
        assert np.abs(out[j, :n] - ref).max() < 1e-5
        assert np.abs(torch.nn.functional.linear(x[j, :n], w, b).numpy() - ref).max() > 1e-2  # int8, not fp32
    assert not out[1, 4:].any()  # padding rows


def test_int8_close_to_fp32_batch_invariant_and_recorded(small):
    before = small.weights_hash
    seqs = [PKA, PKA[:200], PKA[100:140]]
    fp32 = embed_sequences(small, seqs, per_residue=True, progress=False)
    int8 = embed_sequences(small, seqs, per_residue=True, dtype="int8", progress=False)
    assert small.dtype == torch.float32 and small.weights_hash == before
    layer = small.num_layers
    rel = np.linalg.norm(int8.pooled[layer] - fp32.pooled[layer], axis=1) / np.linalg.norm(fp32.pooled[layer], axis=1)
    res = int8.per_residue[layer][0] - fp32.per_residue[layer][0]
    res_rel = np.linalg.norm(res, axis=1) / np.linalg.norm(fp32.per_residue[layer][0], axis=1)
    # 7-bit activations and 8-bit weights (steps ~1/127 of each range) through six layers
    assert 0 < rel.max() < 0.03 and np.median(res_rel) < 0.05
    # the proteins sharing a batch move an embedding only through fp32 rounding flipping an int8 step
    # (1.4e-4 here); one activation range per batch instead of per sequence moved it by 2.0e-3
    alone = embed_sequences(small, [PKA[:200]], dtype="int8", progress=False).pooled[layer][0]
    assert np.linalg.norm(alone - int8.pooled[layer][1]) <= 5e-4 * np.linalg.norm(fp32.pooled[layer][1])
    adata = sequences_to_anndata(["a", "b", "c"], seqs)
    embed(adata, small, dtype="int8", progress=False)
    np.testing.assert_array_equal(adata.X, int8.pooled[layer])
    assert adata.uns["embed"]["dtype"] == "int8" and adata.uns["embed"]["int8"]["engine"] in _embed.INT8_ENGINES


def test_int8_refused_off_cpu():
    with pytest.raises(InputError, match="--dtype int8 is a CPU mode"):
        _embed.resolve_dtype("int8", torch.device("cuda"))


def test_windows_vs_full_context_on_the_trained_model(small):
    """Where windows overlap, averaging them (the rule protlens uses) is closer to the full-context
    pass than reading only the most central window: the evidence behind the rule, kept as a test."""
    from protlens.pp._windows import stitch, window_spans

    seq = PKA
    full = embed_sequences(small, [seq], per_residue=True, window=len(seq), progress=False).per_residue[6][0]
    windowed = embed_sequences(small, [seq], per_residue=True, window=128, overlap=64, progress=False)
    got = windowed.per_residue[6][0]
    spans = window_spans(len(seq), 128, 64)
    pieces = embed_sequences(small, [seq[s:e] for s, e in spans], per_residue=True, progress=False).per_residue[6]
    np.testing.assert_allclose(got, stitch(spans, pieces, len(seq), "uniform"), atol=1e-5)
    central = stitch(spans, pieces, len(seq), "most-central")
    err = {name: np.mean(np.linalg.norm(x - full, axis=1) / np.linalg.norm(full, axis=1))
           for name, x in (("uniform", got), ("most-central", central))}
    assert err["uniform"] < err["most-central"]


def test_interrupted_run_resumes_to_identical_result(small, tmp_path, monkeypatch):
    seqs = [PKA[i : i + n] for i, n in zip(range(0, 300, 10), range(20, 320, 10))]
    want = embed_sequences(small, seqs, max_tokens=600, progress=False)
    real, calls = _embed._run_batch, []

    def dies_after_three(*a, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(_embed, "_run_batch", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        embed_sequences(small, seqs, max_tokens=600, resume_dir=tmp_path / "parts", checkpoint_every=0,
                        progress=False)
    assert len(list((tmp_path / "parts").glob("part-*.npz"))) == 3
    monkeypatch.setattr(_embed, "_run_batch", real)
    got = embed_sequences(small, seqs, max_tokens=600, resume_dir=tmp_path / "parts", progress=False)
    np.testing.assert_array_equal(got.pooled[6], want.pooled[6])
