"""Model files: the weights hash covers exactly what shapes outputs, and broken or malicious files are
refused with one line naming the file (never with torch's advice to disable ``weights_only``)."""

from __future__ import annotations

import os

import pytest
import torch

from protlens.errors import InputError
from protlens.models import ESM_ALPHABET, esm2_config, load_model


def test_base_esmmodel_folder_hash_and_embeddings_are_stable(tmp_path):
    """A base EsmModel has no LM head; transformers would draw a random one at every load."""
    from transformers import EsmModel

    torch.manual_seed(0)
    base = EsmModel(esm2_config(2, 32, 4)).eval()  # with its (unused) pooler, as EsmModel saves
    base.save_pretrained(tmp_path / "base")
    a, b = load_model(tmp_path / "base"), load_model(tmp_path / "base")
    assert a.weights_hash == b.weights_hash and not a.has_logits
    toks = torch.from_numpy(ESM_ALPHABET.batch(["MKTAYIAKQRQISFVKSHFSRQ", "ACDE"])[0])
    mask = toks.ne(ESM_ALPHABET.pad_idx)
    with torch.no_grad():
        ours = a(toks).hidden[2]
        assert torch.equal(ours, b(toks).hidden[2])
        ref = base(input_ids=toks, attention_mask=mask.long()).last_hidden_state
    assert (ours - ref)[mask].abs().max() <= 1e-4
    with pytest.raises(InputError, match="base: a base model without a masked-LM head gives no logits"):
        a(toks, return_logits=True)
    with pytest.raises(InputError, match="cannot be trained"):
        a.hf


def test_truncated_safetensors_refused_by_name(tiny_esm_dir):
    weights = tiny_esm_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"model.safetensors: not a readable safetensors file") as err:
        load_model(tiny_esm_dir)
    assert "\n" not in str(err.value)


def test_garbage_safetensors_file_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(InputError, match="junk.safetensors: not a readable safetensors file"):
        load_model(path)


class _Shell:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("where", ["fair-esm.pt", "pytorch_model.bin"])
def test_pickle_calling_os_system_is_refused_naming_the_global(tmp_path, tiny_esm_dir, capfd, where):
    if where == "fair-esm.pt":
        path = tmp_path / "evil.pt"
        torch.save({"model": {}, "cfg": _Shell()}, path)
        target = path
    else:
        (tiny_esm_dir / "model.safetensors").unlink()
        path = tiny_esm_dir / "pytorch_model.bin"
        torch.save({"esm.embeddings.word_embeddings.weight": torch.zeros(1), "x": _Shell()}, path)
        target = tiny_esm_dir
    with pytest.raises(InputError) as err:
        load_model(target)
    msg = str(err.value)
    assert msg.startswith(f"{path}: refused") and f"calls {os.system.__module__}.system" in msg
    assert "weights_only" not in msg and "\n" not in msg
    assert "pwned" not in capfd.readouterr().out


def test_corrupt_pt_archive_refused(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"broken.pt: refused \(unreadable: PytorchStreamReader failed"):
        load_model(path)


def test_weights_hash_ignores_only_output_free_parameters(tiny_esm):
    """Changing any weight that shapes outputs changes the hash; the contact head does not."""
    before = tiny_esm.weights_hash
    with torch.no_grad():
        tiny_esm.hf.esm.contact_head.regression.weight.add_(1.0)
    assert tiny_esm.weights_hash == before
    with torch.no_grad():
        tiny_esm.hf.lm_head.bias[3] += 1e-3
    assert tiny_esm.weights_hash != before


def test_sharded_safetensors_folder_loads_every_shard(tmp_path, tiny_esm):
    tiny_esm.hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    assert load_model(tmp_path / "sharded").weights_hash == tiny_esm.weights_hash


def test_stored_rotary_frequencies_must_be_the_recomputed_ones(tiny_esm_dir):
    """fp16-rounded frequencies (what an fp16 export stores) load; other frequencies are refused."""
    from safetensors.torch import load_file, save_file

    weights = tiny_esm_dir / "model.safetensors"
    state = load_file(weights)
    keys = [k for k in state if k.endswith("inv_freq")]
    assert keys  # transformers saves the buffer
    exact = 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    save_file({**state, **{k: exact.half().float() for k in keys}}, weights)
    load_model(tiny_esm_dir)
    save_file({**state, **{k: (1.0 / (500 ** (torch.arange(0, 8, 2) / 8))).float() for k in keys}}, weights)
    with pytest.raises(InputError, match="stored rotary frequencies .* are not those of rope_theta=10000"):
        load_model(tiny_esm_dir)
