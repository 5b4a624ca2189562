"""load_model on every source, held to the reference implementations (fair-esm, HF) at <= 1e-4."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, EsmPLM, KmerEmbedder, esm, load_model

RNG = np.random.default_rng(0)
AA = list("ACDEFGHIKLMNPQRSTVWY")


def rand_seqs(lengths):
    return ["".join(RNG.choice(AA, n)) for n in lengths]


def tokens(seqs):
    toks, mask = ESM_ALPHABET.batch(seqs)
    return torch.from_numpy(toks), torch.from_numpy(mask)


@pytest.mark.parametrize("lengths", [[7, 30, 12], [1500]])
def test_hf_folder_matches_hf_model(tiny_esm_dir, lengths):
    from transformers import EsmForMaskedLM, EsmModel

    plm = load_model(tiny_esm_dir)
    assert isinstance(plm, EsmPLM) and plm.num_layers == 2 and plm.hidden_size == 32
    toks, mask = tokens(rand_seqs(lengths))
    with torch.no_grad():
        ours = plm(toks, repr_layers=[-1], return_logits=True)
        ref = EsmForMaskedLM.from_pretrained(tiny_esm_dir).eval()(input_ids=toks, attention_mask=mask.long())
        base = EsmModel.from_pretrained(tiny_esm_dir, add_pooling_layer=False).eval()(input_ids=toks, attention_mask=mask.long())
    assert (ours.logits - ref.logits)[mask].abs().max() <= 1e-4
    assert (ours.hidden[2] - base.last_hidden_state)[mask].abs().max() <= 1e-4


@pytest.mark.parametrize("lengths", [[7, 30, 12], [1500]])
def test_fairesm_checkpoint_matches_fairesm(tiny_fairesm_pt, lengths):
    path, ref_model = tiny_fairesm_pt
    plm = load_model(path)
    toks, mask = tokens(rand_seqs(lengths))
    with torch.no_grad():
        ref = ref_model(toks, repr_layers=[0, 1, 2])
        ours = plm(toks, repr_layers=[0, 1, -1], return_logits=True)
    for layer in (0, 1, 2):
        assert (ours.hidden[layer] - ref["representations"][layer])[mask].abs().max() <= 1e-4
    assert (ours.logits - ref["logits"])[mask].abs().max() <= 1e-4
    with torch.no_grad():  # the transformers model built on demand (training, export) agrees too
        hf_logits = plm.hf(input_ids=toks, attention_mask=mask.long()).logits
    assert (hf_logits - ref["logits"])[mask].abs().max() <= 1e-4


def test_pt_with_foreign_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": {}, "cfg": Evil()}, fh)
    with pytest.raises(InputError, match=r"evil.pt: refused \(not a weights-only pickle"):
        load_model(path)


def test_safetensors_file_hf_names(tiny_esm_dir, tiny_esm):
    plm = load_model(tiny_esm_dir / "model.safetensors")
    assert plm.weights_hash == tiny_esm.weights_hash


def test_safetensors_file_unknown_size_needs_config(tmp_path, tiny_esm):
    from safetensors.torch import save_file

    path = tmp_path / "lone.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_esm.hf.state_dict().items() if "decoder" not in k}, path)
    with pytest.raises(InputError, match="not a published ESM-2 size"):
        load_model(path)


def test_weights_hash_same_across_formats(tiny_fairesm_pt, tmp_path):
    path, _ = tiny_fairesm_pt
    plm = load_model(path)
    plm.save_pretrained(tmp_path / "hf")
    assert load_model(tmp_path / "hf").weights_hash == plm.weights_hash


def test_hub_name_offline_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not in the local Hugging Face cache.*--model PATH"):
        load_model("esm2_t6_8M_UR50D")


@pytest.mark.parametrize("name", ["nonsense_model", "kmer9", "./missing/folder"])
def test_unknown_model(name):
    with pytest.raises(InputError):
        load_model(name)


def test_layer_out_of_range(tiny_esm):
    with pytest.raises(InputError, match="layer 5 out of range"):
        tiny_esm.resolve_layer(5)
    assert tiny_esm.resolve_layer(-1) == 2 and tiny_esm.resolve_layer(-3) == 0


def test_vocab_mismatch_refused(tiny_esm_dir):
    (tiny_esm_dir / "vocab.txt").write_text("A\nB\n")
    with pytest.raises(InputError, match="differs from the ESM-2 vocabulary"):
        load_model(tiny_esm_dir)


def test_kmer_profiles_by_hand():
    emb = KmerEmbedder((1,))
    v = emb.embed(["AAC", "XXA"])
    a, c = "ACDEFGHIKLMNPQRSTVWY".index("A"), "ACDEFGHIKLMNPQRSTVWY".index("C")
    np.testing.assert_allclose(v[0, [a, c]], np.array([2, 1]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(v[1, a], 1.0)  # X is skipped
    two = KmerEmbedder((2,)).embed(["ACAC"])[0]
    names = KmerEmbedder((2,)).feature_names()
    assert np.isclose(two[names.index("AC")], 2 / np.sqrt(5)) and np.isclose(two[names.index("CA")], 1 / np.sqrt(5))
    assert load_model("kmer123").hidden_size == 20 + 400 + 8000


def test_inference_then_gradients_and_weight_updates(tiny_esm):
    """Embedding under inference_mode must not poison later autograd use or hide weight changes."""
    toks, _ = tokens(["MKTAYIAKQR"])
    with torch.inference_mode():
        before = tiny_esm(toks).hidden[2].clone()
    emb = tiny_esm.embed_tokens(toks).detach().requires_grad_(True)
    tiny_esm(toks, inputs_embeds=emb).hidden[2].sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    with torch.no_grad():
        tiny_esm.hf.esm.encoder.layer[0].attention.self.query.weight.mul_(2.0)
    with torch.inference_mode():
        assert (tiny_esm(toks).hidden[2] - before).abs().max() > 1e-4


def test_bundled_protlens_small_loads_offline_and_default_follows_its_card():
    import json

    from protlens.models import available_bundled, bundled_path, default_model_name, load_model

    if "protlens-small" not in available_bundled():
        pytest.skip("protlens-small is not shipped in this install")
    m = load_model("protlens-small")
    assert m.num_layers == 6 and m.hidden_size == 320 and m.max_residues == 512  # trained on 512-residue crops
    meta = json.loads((bundled_path("protlens-small") / "metrics.json").read_text())
    assert default_model_name() == ("protlens-small" if meta.get("recommended_default") else "kmer")


def _fake_hub_cache(root, repo, folder):
    """An HF hub cache holding ``folder``'s files as the snapshot of ``repo`` (the layout huggingface_hub reads)."""
    snap = root / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    return root


@pytest.mark.parametrize("source", ["folder", "fair-esm", "hub-cache"])
def test_standard_sources_load_without_transformers(source, tiny_esm_dir, tiny_esm, tmp_path, request):
    """Embedding must not pay transformers' import (~2 s, ~135 MB) for a standard ESM-2 checkpoint."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    name, want = str(tiny_esm_dir), tiny_esm.weights_hash
    if source == "fair-esm":
        path = request.getfixturevalue("tiny_fairesm_pt")[0]
        name, want = str(path), load_model(path).weights_hash
    elif source == "hub-cache":
        name = "esm2_t6_8M_UR50D"
        env["HF_HUB_CACHE"] = str(_fake_hub_cache(tmp_path / "hub", "facebook/esm2_t6_8M_UR50D", tiny_esm_dir))
        env["HF_HUB_OFFLINE"] = "1"
    code = (
        "import sys, torch\n"
        "from protlens.models import load_model\n"
        f"plm = load_model({name!r})\n"
        "with torch.no_grad():\n"
        "    plm(torch.tensor([[0, 5, 6, 7, 2]]), return_logits=True)\n"
        "print('transformers' in sys.modules, plm.weights_hash, plm.source)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    imported, digest, origin = out.stdout.split()
    assert imported == "False" and digest == want
    if source == "hub-cache":
        assert origin == "hf-hub:facebook/esm2_t6_8M_UR50D"


def test_light_weights_equal_transformers_weights(tiny_esm_dir, tiny_esm):
    """Same parameter names and values as EsmForMaskedLM; ``.hf`` builds an equivalent HF model."""
    from transformers import EsmForMaskedLM

    plm = load_model(tiny_esm_dir)
    assert isinstance(plm.net, esm._Node)
    ref = EsmForMaskedLM.from_pretrained(tiny_esm_dir).eval()
    skip = ("rotary", "position_ids")
    want = {k: v for k, v in ref.state_dict().items() if not any(s in k for s in skip)}
    got = plm.net.state_dict()
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert plm.weights_hash == tiny_esm.weights_hash
    toks, mask = tokens(rand_seqs([20, 33]))
    with torch.no_grad():
        before = plm(toks, return_logits=True).logits
        hf = plm.hf  # switches the model to the transformers module
        assert isinstance(hf, EsmForMaskedLM) and plm.net is hf
        after = plm(toks, return_logits=True).logits
        direct = ref(input_ids=toks, attention_mask=mask.long()).logits
    assert (before - after)[mask].abs().max() <= 1e-6
    assert (before - direct)[mask].abs().max() <= 1e-4


def test_bin_folder_loads_strictly_without_transformers(tiny_esm_dir, tiny_esm, tmp_path):
    (tmp_path / "bin").mkdir()
    for name in ("config.json", "vocab.txt"):
        (tmp_path / "bin" / name).write_text((tiny_esm_dir / name).read_text())
    torch.save(tiny_esm.hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    plm = load_model(tmp_path / "bin")
    assert isinstance(plm.net, esm._Node) and plm.weights_hash == tiny_esm.weights_hash


@pytest.mark.parametrize("change, reason", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key' is not supported"),
    ({"is_folding_model": True}, "is_folding_model=True"),
    ({"vocab_size": 35}, "vocab_size=35"),
    ({"is_decoder": True}, "is_decoder=True"),
    ({"model_type": "bert"}, "model_type='bert'"),
    ({"num_attention_heads": 5}, "not a multiple of num_attention_heads=5"),
])
def test_configs_not_computed_exactly_are_refused_by_name(tiny_esm_dir, change, reason):
    import json

    cfg = json.loads((tiny_esm_dir / "config.json").read_text())
    (tiny_esm_dir / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(InputError, match=f"{tiny_esm_dir.name}: config .*{re.escape(reason)}"):
        load_model(tiny_esm_dir)


def test_checkpoint_missing_parameters_is_one_clear_error(tiny_esm):
    state = {k: v for k, v in tiny_esm.hf.state_dict().items() if "layer.1.output.dense" not in k}
    with pytest.raises(InputError, match="ckpt: weights do not match.*missing esm.encoder.layer.1.output.dense"):
        esm._from_state(state, num_heads=4, source="ckpt")
