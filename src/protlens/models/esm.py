"""ESM-2, ESM-1b and ESM-1v from any source (HF hub name, local HF folder, fair-esm ``.pt``,
safetensors) as one class, computed exactly or refused.

Every file is read strictly into a container with HF ``EsmForMaskedLM``'s module names that does
not import transformers (:func:`_light_esm2`; :attr:`EsmPLM.hf` converts on demand for training
and export): a config protlens does not implement, or a missing or unexpected weight, stops with
one line naming the file and the reason. Inference runs through :class:`EsmPLM.forward`, a lean
re-implementation of the ESM forward pass over those parameters: fused QKV projection, rotary
embedding as one complex product with tables cached per length (ESM-2) or learned absolute
positions counted from ``pad_idx + 1`` with the optional embedding layer norm (ESM-1b/ESM-1v),
PyTorch SDPA attention, early exit after the deepest requested layer. Tests hold it to <= 1e-4 of
fair-esm and HF outputs, on random and on trained weights."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .alphabet import ESM_ALPHABET, Alphabet

# oneDNN runs CPU bf16 linear layers and keeps each kernel it compiles (one set per batch shape) in
# a 1024-entry cache. Length-sorted batches seldom repeat a shape, so the cache only grows; 32
# entries bound it (BENCHMARKS.md). Read by oneDNN on first use; a value the user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

#: (layers, hidden, heads) of the published ESM-2 sizes (needed when a checkpoint has no config).
ESM2_ARCHS = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}
#: ESM-1b and the five ESM-1v members: learned absolute positions, 1024 tokens at most.
ESM1_ARCHS = {"esm1b_t33_650M_UR50S": (33, 1280, 20),
              **{f"esm1v_t33_650M_UR90S_{i}": (33, 1280, 20) for i in range(1, 6)}}
ESM1V_MEMBERS = tuple(f"facebook/esm1v_t33_650M_UR90S_{i}" for i in range(1, 6))
_HEADS_BY_SHAPE = {(n, d): h for n, d, h in ESM2_ARCHS.values()}


def _esm2_config_dict(num_layers: int, hidden_size: int, num_heads: int, max_positions: int = 1026,
                      token_dropout: bool = True, intermediate_size: int | None = None) -> dict:
    """The ``EsmConfig`` fields of an ESM-2 architecture, as config.json writes them."""
    return dict(
        model_type="esm", vocab_size=len(ESM_ALPHABET), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_positions, position_embedding_type="rotary",
        token_dropout=token_dropout, emb_layer_norm_before=False, layer_norm_eps=1e-5,
        mask_token_id=ESM_ALPHABET.mask_idx, pad_token_id=ESM_ALPHABET.pad_idx,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def esm2_config(num_layers: int, hidden_size: int, num_heads: int, max_positions: int = 1026,
                token_dropout: bool = True, intermediate_size: int | None = None):
    """An HF ``EsmConfig`` for an ESM-2 architecture of the given size."""
    from transformers import EsmConfig

    return EsmConfig(**_esm2_config_dict(num_layers, hidden_size, num_heads, max_positions, token_dropout,
                                         intermediate_size))


def esm1b_config(num_layers: int, hidden_size: int, num_heads: int, max_positions: int = 1026,
                 token_dropout: bool = True, emb_layer_norm_before: bool = False,
                 intermediate_size: int | None = None):
    """An HF ``EsmConfig`` of the ESM-1b/ESM-1v layout (learned absolute positions, optional embedding norm)."""
    from transformers import EsmConfig

    cfg = _esm2_config_dict(num_layers, hidden_size, num_heads, max_positions, token_dropout, intermediate_size)
    return EsmConfig(**{**cfg, "position_embedding_type": "absolute", "emb_layer_norm_before": emb_layer_norm_before})


_FAIRESM_LAYER = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "LayerNorm",
}
_FAIRESM_TOP = {
    "embed_tokens.weight": "esm.embeddings.word_embeddings.weight",
    "embed_positions.weight": "esm.embeddings.position_embeddings.weight",
    "emb_layer_norm_before.weight": "esm.embeddings.layer_norm.weight",
    "emb_layer_norm_before.bias": "esm.embeddings.layer_norm.bias",
    "emb_layer_norm_after.weight": "esm.encoder.emb_layer_norm_after.weight",
    "emb_layer_norm_after.bias": "esm.encoder.emb_layer_norm_after.bias",
    "lm_head.weight": "lm_head.decoder.weight",
}


def _fairesm_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fair-esm ESM-2 / ESM-1b parameters to HF ``EsmForMaskedLM`` names.

    Names without an HF counterpart are kept as they are, so the strict load reports them.
    """
    prefix = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        k = prefix.sub("", k)
        m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m and m.group(2) in _FAIRESM_LAYER:
            out[f"esm.encoder.layer.{m.group(1)}.{_FAIRESM_LAYER[m.group(2)]}.{m.group(3)}"] = v
        elif k in _FAIRESM_TOP:
            out[_FAIRESM_TOP[k]] = v
        elif k.startswith("contact_head."):
            out["esm." + k] = v
        else:  # rotary frequencies are checked, then recomputed (_check_rotary)
            out[k] = v
    return out


def _shape_config(state: dict[str, torch.Tensor], num_heads: int | None, token_dropout: bool, source: str) -> dict:
    """The config of an ESM-2 (rotary) or ESM-1b (learned positions) checkpoint, read off its shapes."""
    try:
        hidden = state["esm.embeddings.word_embeddings.weight"].shape[1]
        layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"esm\.encoder\.layer\.(\d+)\.", k)))
        inter = state["esm.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except (KeyError, ValueError):
        raise InputError(f"{source}: does not hold ESM parameters (no token embedding or encoder layers)") from None
    heads = num_heads or _HEADS_BY_SHAPE.get((layers, hidden))
    if heads is None:
        raise InputError(
            f"{source}: {layers} layers x {hidden} dims is not a published ESM-2 size: "
            "pass a folder with config.json to give the number of attention heads"
        )
    cfg = _esm2_config_dict(layers, hidden, heads, token_dropout=token_dropout, intermediate_size=inter)
    pos = state.get("esm.embeddings.position_embeddings.weight")
    if pos is not None:
        cfg.update(position_embedding_type="absolute", max_position_embeddings=pos.shape[0],
                   emb_layer_norm_before="esm.embeddings.layer_norm.weight" in state)
    return cfg


def _from_state(state: dict[str, torch.Tensor], num_heads: int | None, token_dropout: bool = True,
                source: str = "checkpoint") -> nn.Module:
    """ESM parameters (HF names) in :func:`_light_esm2`'s container, the architecture read off the shapes."""
    return _light_esm2(_shape_config(state, num_heads, token_dropout, source), state, source)


def _torch_load(path: Path, allowed: tuple = ()) -> object:
    """``torch.load(weights_only=True)``; a refused or broken file is one InputError naming it.

    torch's own message advises turning ``weights_only`` off, i.e. running the file's code: only
    its first line (which names a blocked global) is kept.
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling, zip and I/O errors all mean "not loadable"
        raise InputError(f"{path}: refused ({_load_error_reason(e)})") from None


def _load_error_reason(err: Exception) -> str:
    """The part of a ``torch.load`` error a user can act on: the blocked global, the unpickler's
    complaint, or the archive problem; never torch's advice to load with ``weights_only=False``."""
    text = str(err)
    blocked = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if blocked:
        return f"unpickling calls {blocked.group(1)}, which weights-only loading blocks"
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    if detail:
        return f"not a weights-only pickle: {detail.group(1).strip().splitlines()[0]}"
    if "weights_only" in text:
        return "not a weights-only pickle"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"unreadable: {first.split('. ')[0][:160]}"


def load_fairesm_checkpoint(path: Path) -> nn.Module:
    """Read a fair-esm ``.pt`` safely (``weights_only=True``, only ``argparse.Namespace`` allowed).

    ESM-2 checkpoints carry ``cfg``; ESM-1b/ESM-1v ones carry ``args`` with ``arch='roberta_large'``
    and are prepared as fair-esm's ``_load_model_and_alphabet_core_v1`` does: the ``<mask>`` row of
    the token embedding zeroed, the embedding layer norm present when its weights are.
    """
    data = _torch_load(path, (argparse.Namespace,))
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise InputError(f"{path}: no 'model' state dict in checkpoint")
    state = _fairesm_to_hf(data["model"])
    if "args" in data and "cfg" not in data:
        args = data["args"]
        arch = getattr(args, "arch", None)
        if arch != "roberta_large":
            raise InputError(f"{path}: fair-esm architecture '{arch}' is not supported (ESM-2, ESM-1b and "
                             "ESM-1v are; ESM-1 and the MSA Transformer are not)")
        heads = getattr(args, "encoder_attention_heads", None) or getattr(args, "attention_heads", None)
        token_dropout = bool(getattr(args, "token_dropout", False))  # fair-esm's default for this layout
        word = state.get("esm.embeddings.word_embeddings.weight")
        if word is not None:
            word = word.clone()
            word[ESM_ALPHABET.mask_idx] = 0.0  # "For token drop", as fair-esm's loader does
            state["esm.embeddings.word_embeddings.weight"] = word
        cfg = _shape_config(state, heads, token_dropout, str(path))
        if cfg["position_embedding_type"] != "absolute":
            raise InputError(f"{path}: ESM-1b checkpoint without learned position embeddings")
        max_positions = getattr(args, "max_positions", None)
        if max_positions is not None and max_positions + ESM_ALPHABET.pad_idx + 1 != cfg["max_position_embeddings"]:
            raise InputError(f"{path}: args.max_positions={max_positions} does not match the "
                             f"{cfg['max_position_embeddings']} position embeddings")
        return _light_esm2(cfg, state, str(path))
    cfg = data.get("cfg", {})
    cfg = cfg.get("model", cfg) if isinstance(cfg, dict) else cfg
    heads = getattr(cfg, "encoder_attention_heads", None)
    token_dropout = bool(getattr(cfg, "token_dropout", True))
    conf = _shape_config(state, heads, token_dropout, str(path))
    if conf["position_embedding_type"] != "rotary":
        raise InputError(f"{path}: an ESM-2 checkpoint (cfg) with learned position embeddings is not a known layout")
    return _light_esm2(conf, state, str(path))


def _interleave_halves(head_dim: int) -> torch.Tensor:
    """Row order that puts head dims ``i`` and ``i + d/2`` (the pairs ESM-2's RoPE rotates) side by side.

    Applied to the query and key weights alike it leaves every q.k product unchanged, and makes
    the rotation one complex multiplication instead of ESM's rotate-half (slice, negate, cat,
    two products and a sum): rotary embedding was ~30% of CPU inference time.
    """
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half, head_dim)], dim=1).reshape(-1)


def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (head dims interleaved in pairs) by the complex phases ``rot`` [T, d/2]."""
    z = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(z * rot).flatten(-2).to(x.dtype)


def _pack_int8(weight: torch.Tensor, bias: torch.Tensor) -> torch.ScriptObject:
    """``weight`` as symmetric int8 with one scale per output channel, packed for torch's x86 (fbgemm) kernels."""
    w = weight.detach().float().contiguous()
    scale = (w.abs().amax(1).clamp_min(1e-12) / 127).double()
    with warnings.catch_warnings():  # torch marks its quantized tensors deprecated; the kernels are what we use
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, bias.detach().float())


def _int8_linear(x: torch.Tensor, packed: torch.ScriptObject, lengths: list[int] | None) -> torch.Tensor:
    """A linear layer in int8: activations quantized per sequence over its real tokens (7-bit range).

    One range per sequence, not per batch: the proteins sharing a batch then move an embedding only
    through fp32 rounding (1e-4 relative on protlens-small, against 2e-3 with one range per batch).
    Padding positions come out as zeros (nothing reads them).
    """
    if lengths is None:  # one sequence, no padding
        return torch.ops.quantized.linear_dynamic(x, packed, True)
    parts = [torch.ops.quantized.linear_dynamic(x[j, :n], packed, True) for j, n in enumerate(lengths)]
    out = x.new_zeros(*x.shape[:2], parts[0].shape[-1])
    for j, n in enumerate(lengths):
        out[j, :n] = parts[j]
    return out


class _Node(nn.Module):
    """A plain container holding children under HF ``EsmForMaskedLM``'s attribute names."""

    def __init__(_node, **children: nn.Module) -> None:  # noqa: N805 - HF has a child named "self"
        super().__init__()
        for k, v in children.items():
            _node.add_module(k, v)


#: config.json values protlens computes exactly (None = the key may be absent; a missing
#: position_embedding_type means "absolute", EsmConfig's default). Anything else is refused by name.
_SUPPORTED_CONFIG = {"model_type": ("esm",), "position_embedding_type": ("rotary", "absolute", None),
                     "emb_layer_norm_before": (False, True, None), "is_folding_model": (False, None),
                     "esmfold_config": (None,), "vocab_size": (len(ESM_ALPHABET),), "is_decoder": (False, None),
                     "add_cross_attention": (False, None), "pad_token_id": (ESM_ALPHABET.pad_idx, None),
                     "mask_token_id": (ESM_ALPHABET.mask_idx, None)}


def check_config(cfg: dict, source: str) -> None:
    """Refuse configs whose forward pass protlens does not implement, naming the first offending key."""
    for key, allowed in _SUPPORTED_CONFIG.items():
        if cfg.get(key) not in allowed:
            shown = ", ".join(repr(a) for a in allowed if a is not None)
            raise InputError(f"{source}: config {key}={cfg.get(key)!r} is not supported (protlens computes {shown})")
    D, H = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if not isinstance(D, int) or not isinstance(H, int) or H < 1 or D % H:
        raise InputError(f"{source}: config hidden_size={D!r} is not a multiple of num_attention_heads={H!r}")
    if cfg.get("head_dim") not in (None, D // H):
        raise InputError(f"{source}: config head_dim={cfg['head_dim']!r} differs from hidden_size/heads={D // H}")


#: Parameters that never change protlens' outputs, dropped when read: recomputed rotary frequencies,
#: HF's position-id buffer and the base model's unused pooler.
_IGNORED = re.compile(r"(inv_freq|position_ids)$|^esm\.pooler\.")


def _normalise_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names as ``EsmForMaskedLM`` holds them: a base ``EsmModel``'s keys get the ``esm.`` prefix,
    legacy ``LayerNorm.gamma/.beta`` become ``.weight/.bias``, ignorable buffers are dropped."""
    base = not any(k.startswith(("esm.", "lm_head.")) for k in state)
    out = {}
    for k, v in state.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        k = "esm." + k if base else k
        if not _IGNORED.search(k):
            out[k] = v
    return out


def _check_rotary(state: dict[str, torch.Tensor], cfg: dict, source: str) -> None:
    """Stored rotary frequencies must be the ones protlens recomputes (``rope_theta``, head size) up
    to fp16 rounding (files saved in fp16 store them rounded; training used the exact ones)."""
    dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = float(cfg.get("rope_theta") or 10000.0)
    want = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    for k, v in state.items():
        if k.endswith("inv_freq"):
            if cfg.get("position_embedding_type", "absolute") != "rotary":
                raise InputError(f"{source}: rotary frequencies {k} in a model configured without rotary positions")
            rel = ((v.double() - want) / want).abs().max().item() if v.shape == want.shape else float("inf")
            if rel > 2e-3:
                raise InputError(f"{source}: stored rotary frequencies {k} are not those of rope_theta={theta:g} "
                                 f"and head size {dim} (max relative difference {rel:.2g})")


def _light_esm2(cfg: dict, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """An ESM-2 or ESM-1b/ESM-1v model's parameters in HF's module layout, loaded strictly,
    built without importing transformers.

    Importing transformers costs ~2.3 s and ~135 MB before the first sequence is embedded
    (BENCHMARKS.md); inference needs only the tensors, and :attr:`EsmPLM.hf` builds the real HF
    model from them when training or export asks for it. Every parameter of the layout must be in
    ``state`` and nothing else may be, except a contact head (optional) and a masked-LM head (a base
    ``EsmModel`` has none: the model then embeds but has no logits).
    """
    check_config(cfg, source)
    D, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    inter, eps = cfg.get("intermediate_size", 3072), cfg.get("layer_norm_eps", 1e-12)
    absolute = cfg.get("position_embedding_type", "absolute") == "absolute"
    _check_rotary(state, cfg, source)
    state = _normalise_names(state)
    has_head = any(k.startswith("lm_head.") for k in state)

    def layer() -> nn.Module:
        attention = _Node(self=_Node(query=nn.Linear(D, D), key=nn.Linear(D, D), value=nn.Linear(D, D)),
                          output=_Node(dense=nn.Linear(D, D)), LayerNorm=nn.LayerNorm(D, eps=eps))
        return _Node(attention=attention, intermediate=_Node(dense=nn.Linear(D, inter)),
                     output=_Node(dense=nn.Linear(inter, D)), LayerNorm=nn.LayerNorm(D, eps=eps))

    with torch.device("meta"):
        embeddings = _Node(word_embeddings=nn.Embedding(len(ESM_ALPHABET), D))
        if absolute:
            embeddings.add_module("position_embeddings", nn.Embedding(cfg.get("max_position_embeddings", 512), D))
        if cfg.get("emb_layer_norm_before"):
            embeddings.add_module("layer_norm", nn.LayerNorm(D, eps=eps))
        esm = _Node(embeddings=embeddings, encoder=_Node(layer=nn.ModuleList(layer() for _ in range(L)),
                                                         emb_layer_norm_after=nn.LayerNorm(D, eps=eps)))
        if "esm.contact_head.regression.weight" in state:
            esm.add_module("contact_head", _Node(regression=nn.Linear(L * H, 1)))
        net = _Node(esm=esm)
        if has_head:
            lm_head = _Node(dense=nn.Linear(D, D), layer_norm=nn.LayerNorm(D, eps=eps),
                            decoder=nn.Linear(D, len(ESM_ALPHABET), bias=False))
            lm_head.bias = nn.Parameter(torch.empty(len(ESM_ALPHABET)))
            net.add_module("lm_head", lm_head)
    state = {k: v.float() for k, v in state.items()}
    tied = cfg.get("tie_word_embeddings", True)  # EsmConfig's default
    word = state.get("esm.embeddings.word_embeddings.weight")
    if has_head and word is not None and (tied or "lm_head.decoder.weight" not in state):
        state["lm_head.decoder.weight"] = word
    want = set(net.state_dict())
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        parts = [f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise InputError(f"{source}: weights do not match the configured ESM layout ({'; '.join(parts)})")
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:])
        raise InputError(f"{source}: weights do not match the configured ESM layout ({detail[:300]})") from None
    if has_head and tied:
        net.lm_head.decoder.weight = esm.embeddings.word_embeddings.weight
    # EsmConfig's defaults for what EsmPLM reads
    net.config = SimpleNamespace(**{"token_dropout": False, "max_position_embeddings": 1026,
                                    "position_embedding_type": "absolute", "rope_theta": 10000.0, **cfg})
    return net


@dataclass
class PLMOutput:
    """What one forward pass returns: hidden states by layer (0 = embeddings) and optional logits."""

    hidden: dict[int, torch.Tensor]
    logits: torch.Tensor | None = None


class EsmPLM(nn.Module):
    """An ESM-2, ESM-1b or ESM-1v model ready for inference and scoring, whatever file it came from."""

    is_neural = True

    def __init__(self, hf_model: nn.Module, name: str, source: str, alphabet: Alphabet = ESM_ALPHABET) -> None:
        """``hf_model``: an HF ``EsmForMaskedLM``, or the same parameters from :func:`_light_esm2`."""
        super().__init__()
        self.net = hf_model.eval()
        self.name = name
        self.source = source
        self.alphabet = alphabet
        cfg = hf_model.config
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.num_heads: int = cfg.num_attention_heads
        #: learned absolute positions (ESM-1b/ESM-1v) instead of rotary ones (ESM-2)
        self.absolute: bool = getattr(cfg, "position_embedding_type", "absolute") == "absolute"
        self.rope_theta: float = float(getattr(cfg, "rope_theta", None) or 10000.0)
        # ESM-2 was trained on 1024-token crops (1022 residues + BOS/EOS); HF configs say 1026. Learned
        # positions start at pad_idx + 1, so ESM-1b's 1026 rows also reach exactly 1024 tokens.
        self.max_residues: int = min(cfg.max_position_embeddings - alphabet.pad_idx - 3, 1022)
        self.token_dropout: bool = bool(cfg.token_dropout)
        #: a base EsmModel carries no masked-LM head: it embeds, but gives no logits
        self.has_logits: bool = hasattr(hf_model, "lm_head")
        self._rope_cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._fused: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._fused_version: tuple[int, ...] = ()
        self._int8: list[list[torch.ScriptObject]] | None = None
        self._int8_version: tuple[int, ...] = ()

    @property
    def hf(self) -> nn.Module:
        """The weights as a transformers ``EsmForMaskedLM`` (for training and export), built on first use.

        Loaded strictly: only parameters known not to change outputs (rotary frequencies, position
        ids, a contact head the file did not have) may be left at transformers' initialisation, so
        training never starts from partly random weights.
        """
        if isinstance(self.net, _Node):
            if not self.has_logits:
                raise InputError(f"{self.source}: a base model without a masked-LM head cannot be trained, "
                                 "exported or used for logits (its head would be random)")
            from transformers import EsmConfig, EsmForMaskedLM

            cfg = {k: v for k, v in vars(self.net.config).items() if not k.startswith("_")}
            model = EsmForMaskedLM(EsmConfig(**cfg))
            ours = self.net.state_dict()
            result = model.load_state_dict(ours, strict=False)
            random = [k for k in result.missing_keys
                      if not (k.endswith(("inv_freq", "position_ids")) or k.startswith("esm.contact_head."))]
            if random or result.unexpected_keys:
                raise InputError(f"{self.source}: transformers' EsmForMaskedLM does not take these weights "
                                 f"(missing {random[:4]}, unexpected {result.unexpected_keys[:4]})")
            self.net = model.to(device=self.device, dtype=self.dtype).eval()
            self._fused = self._int8 = None
        return self.net

    # -- provenance -------------------------------------------------------------------------------
    @property
    def weights_hash(self) -> str:
        """sha256 over the parameters that shape outputs (name + bytes), stable across file formats
        and loads.

        Left out: the contact head (embeddings never use it; files without one get a random one
        from transformers) and recomputed buffers.
        """
        h = hashlib.sha256()
        for k, v in sorted(self.net.state_dict().items()):
            if "rotary" in k or "position_ids" in k or "contact_head" in k:
                continue
            h.update(k.encode())
            h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def _apply(self, fn, recurse=True):  # .to()/.half() invalidate derived tensors
        self._fused = self._int8 = None
        self._rope_cache = {}
        return super()._apply(fn, recurse)

    # -- forward ----------------------------------------------------------------------------------
    def _fused_qkv(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer fused (scaled Q | K | V) weights, rebuilt whenever the parameters change.

        Q and K rows are reordered per head by :func:`_interleave_halves` (see there). Built outside
        inference mode so the same tensors serve ``inference_mode`` embedding and autograd-based
        attribution alike.
        """
        layers = self.net.esm.encoder.layer
        version = tuple(p._version for layer in layers for p in layer.attention.self.parameters())
        if self._fused is None or self._fused_version != version:
            head_dim = self.hidden_size // self.num_heads
            scale = head_dim**-0.5
            order = (torch.arange(self.num_heads)[:, None] * head_dim + _interleave_halves(head_dim)).reshape(-1)
            order = order.to(self.device)
            fused = []
            with torch.inference_mode(False), torch.no_grad():
                for layer in layers:
                    s = layer.attention.self
                    # fold the 1/sqrt(d) query scaling into the weights: one matmul, no extra multiply
                    w = torch.cat([s.query.weight[order] * scale, s.key.weight[order], s.value.weight])
                    b = torch.cat([s.query.bias[order] * scale, s.key.bias[order], s.value.bias])
                    fused.append((w, b))
            self._fused, self._fused_version = fused, version
        return self._fused

    def _int8_packs(self) -> list[list[torch.ScriptObject]]:
        """Per layer, int8 packs of (fused QKV, attention output, fc1, fc2), rebuilt when the parameters change."""
        layers = self.net.esm.encoder.layer
        version = tuple(p._version for p in layers.parameters())
        if self._int8 is None or self._int8_version != version:
            self._int8 = [[_pack_int8(*qkv), *(_pack_int8(d.weight, d.bias) for d in
                                                (layer.attention.output.dense, layer.intermediate.dense,
                                                 layer.output.dense))]
                          for qkv, layer in zip(self._fused_qkv(), layers)]
            self._int8_version = version
        return self._int8

    def _rope(self, length: int, device: torch.device) -> torch.Tensor:
        """Complex rotary phases [length, d/2] (ESM-2's frequencies, base ``rope_theta``), cached per length."""
        key = (length, device)
        if key not in self._rope_cache:
            if len(self._rope_cache) > 64:
                self._rope_cache.clear()
            dim = self.hidden_size // self.num_heads
            with torch.inference_mode(False):  # usable both under inference_mode and autograd
                inv = 1.0 / (self.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
                freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
                self._rope_cache[key] = torch.polar(torch.ones_like(freqs), freqs)
        return self._rope_cache[key]

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Layer 0 of the model: token embeddings with token-dropout rescaling (when the model was
        trained with it) and, for ESM-1b/ESM-1v, learned positions and the embedding layer norm."""
        x = self.net.esm.embeddings.word_embeddings(tokens)
        return self._scale_embeddings(x, tokens)

    def _scale_embeddings(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens.eq(self.alphabet.pad_idx)
        if self.token_dropout:
            is_mask = tokens.eq(self.alphabet.mask_idx)
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / (~pad).sum(-1).to(x.dtype)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
        emb = self.net.esm.embeddings
        if self.absolute:
            table = emb.position_embeddings.weight
            if tokens.shape[1] > table.shape[0] - self.alphabet.pad_idx - 1:
                raise InputError(f"{self.name}: {tokens.shape[1]} tokens exceed the {self.max_residues + 2} its "
                                 f"learned positions cover ({self.max_residues} residues); use --window "
                                 f"{self.max_residues} or less")
            # fair-esm's LearnedPositionalEmbedding: non-pad tokens count from pad_idx + 1
            keep = (~pad).long()
            x = x + F.embedding(torch.cumsum(keep, dim=1) * keep + self.alphabet.pad_idx, table)
        norm = getattr(emb, "layer_norm", None)
        if norm is not None:
            x = norm(x)
        return x.masked_fill(pad.unsqueeze(-1), 0.0)

    def forward(self, tokens: torch.Tensor, repr_layers: tuple[int, ...] | list[int] = (-1,),
                return_logits: bool = False, inputs_embeds: torch.Tensor | None = None,
                int8: bool = False) -> PLMOutput:
        """Hidden states of ``repr_layers`` (fair-esm numbering: 0 = embeddings, -1 = last).

        ``inputs_embeds`` (already scaled, as from :meth:`embed_tokens`) lets attribution methods
        differentiate with respect to the embedding layer. ``int8``: the encoder's linear layers run
        in int8 (CPU, fp32 model, no gradients; :func:`_int8_linear`); attention, norms and the
        masked-LM head stay fp32.
        """
        if return_logits and not self.has_logits:
            raise InputError(f"{self.source}: a base model without a masked-LM head gives no logits")
        if int8 and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise InputError(f"{self.name}: int8 linear layers run on CPU from fp32 weights "
                             f"(this model is {self.dtype} on {self.device})")
        layers = sorted({self.resolve_layer(i) for i in repr_layers})
        deepest = self.num_layers if return_logits else (layers[-1] if layers else 0)
        x = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        pad = tokens.eq(self.alphabet.pad_idx)
        B, T, D = x.shape
        H = self.num_heads
        mask = None if not pad.any() else (~pad)[:, None, None, :]
        rot = None if self.absolute else self._rope(T, x.device)
        hidden: dict[int, torch.Tensor] = {}
        if 0 in layers:
            hidden[0] = x
        fused = self._fused_qkv()
        packs = self._int8_packs() if int8 else None
        lengths = None if packs is None or B == 1 else (~pad).sum(1).tolist()
        enc = self.net.esm.encoder
        for i in range(deepest):
            layer = enc.layer[i]
            att = layer.attention
            # the four projections: QKV (fused), attention output, fc1, fc2
            if packs is None:
                lin = (partial(F.linear, weight=fused[i][0], bias=fused[i][1]), att.output.dense,
                       layer.intermediate.dense, layer.output.dense)
            else:
                lin = tuple(partial(_int8_linear, packed=p, lengths=lengths) for p in packs[i])
            h = F.layer_norm(x, (D,), att.LayerNorm.weight, att.LayerNorm.bias, att.LayerNorm.eps)
            qkv = lin[0](h).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            q, k = (qkv[0], qkv[1]) if rot is None else _rotate(qkv[:2], rot)
            # a contiguous V: the CPU flash kernel runs ~8% faster than on the strided view (T=1024)
            a = F.scaled_dot_product_attention(q, k, qkv[2].contiguous(), attn_mask=mask, scale=1.0)
            a = a.transpose(1, 2).reshape(B, T, D)
            x = x + lin[1](a)
            h = F.layer_norm(x, (D,), layer.LayerNorm.weight, layer.LayerNorm.bias, layer.LayerNorm.eps)
            x = x + lin[3](F.gelu(lin[2](h)))
            if i + 1 == self.num_layers:
                x = enc.emb_layer_norm_after(x)
            if i + 1 in layers:
                hidden[i + 1] = x
        logits = self._lm_head(x) if return_logits else None
        return PLMOutput(hidden=hidden, logits=logits)

    def _lm_head(self, x: torch.Tensor) -> torch.Tensor:
        """ESM-2's masked-LM head (HF ``EsmLMHead``): dense, GELU, layer norm, tied decoder + bias."""
        lm = self.net.lm_head
        return lm.decoder(lm.layer_norm(F.gelu(lm.dense(x)))) + lm.bias

    def resolve_layer(self, layer: int) -> int:
        """Map negative layer numbers to 0..num_layers, rejecting out-of-range ones."""
        idx = layer + self.num_layers + 1 if layer < 0 else layer
        if not 0 <= idx <= self.num_layers:
            raise InputError(f"layer {layer} out of range for {self.name} ({self.num_layers} layers; 0..{self.num_layers} or negative)")
        return idx

    def save_pretrained(self, path: str | Path) -> None:
        """Export as an HF folder (safetensors) that :func:`protlens.models.load_model` reads."""
        self.hf.save_pretrained(path, safe_serialization=True)
        _write_vocab(Path(path))


def _write_vocab(path: Path) -> None:
    (path / "vocab.txt").write_text("\n".join(ESM_ALPHABET.tokens) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "EsmTokenizer", "model_max_length": 1024}))


def check_vocab(folder: Path) -> None:
    """Refuse HF folders whose vocabulary differs from ESM-2's (ids would silently mean other residues)."""
    vocab = folder / "vocab.txt"
    if vocab.exists():
        toks = tuple(t.strip() for t in vocab.read_text().splitlines() if t.strip())
        if toks != ESM_ALPHABET.tokens:
            raise InputError(f"{folder}: vocab.txt differs from the ESM-2 vocabulary; not an ESM-2 model")


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF folder: ``model.safetensors``, sharded safetensors, or ``pytorch_model.bin``
    (sharded or not, read with ``weights_only=True``); safetensors win when both are there."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).exists():
            files = [folder / single]
        elif (folder / index).exists():
            try:
                shards = json.loads((folder / index).read_text())["weight_map"].values()
                files = [folder / f for f in sorted(set(shards))]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InputError(f"{folder / index}: not a weight index ({type(e).__name__}: {e})") from None
        else:
            continue
        state: dict[str, torch.Tensor] = {}
        for f in files:
            if f.suffix == ".safetensors":
                try:
                    state.update(load_file(f))
                except (SafetensorError, OSError) as e:
                    raise InputError(f"{f}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
            else:
                part = _torch_load(f)
                if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
                    raise InputError(f"{f}: not a state dict of tensors")
                state.update(part)
        return state
    raise InputError(f"{folder}: no model.safetensors or pytorch_model.bin (nor a sharded index) in the folder")


def load_hf_folder(folder: Path, name: str | None = None, source: str | None = None) -> EsmPLM:
    """Load a local HF ESM folder (config.json + safetensors/bin weights), strictly, without transformers.

    ESM-2 (rotary) and ESM-1b/ESM-1v (learned positions, optional embedding layer norm) layouts,
    masked-LM or base ``EsmModel``; any other config, or weights that do not match it, is refused.
    """
    check_vocab(folder)
    config = folder / "config.json"
    if not config.exists():
        raise InputError(f"{folder}: no config.json (not an HF model folder)")
    try:
        cfg = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{config}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{config}: not a JSON object")
    net = _light_esm2(cfg, _read_weights(folder), str(folder))
    return EsmPLM(net, name or folder.name, source or str(folder))


def _cached_snapshot(repo: str) -> Path | None:
    """The HF cache's snapshot folder of ``repo`` when its config.json is there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def hub_unreachable(timeout: float = 2.0) -> bool:
    """True when ``HF_HUB_OFFLINE`` is set or the hub's host does not answer within ``timeout`` seconds.

    Checked once before downloading, so an offline machine fails at once instead of spending the
    hub client's retries (43 s measured) on a name that cannot be fetched. The connection is tried
    in a thread because name resolution itself can hang past any socket timeout.
    """
    import socket
    import threading
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    reached = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout).close()
            reached.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()
    return not reached.wait(timeout)


def load_hub(repo: str) -> EsmPLM:
    """Load from the HF cache, reaching the hub only if the model is not cached and we are online.

    The snapshot is read like a local folder (no transformers import).
    """
    folder = _cached_snapshot(repo)
    last: Exception | None = None
    if folder is None and not hub_unreachable():  # offline: fail at once, no retries
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
            if not any(folder.glob("*.safetensors")):
                folder = Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt", "*.bin"]))
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
            folder, last = None, e
    if folder is None:
        why = f" ({type(last).__name__})" if last else " (offline)"
        raise InputError(
            f"model '{repo}' is not in the local Hugging Face cache and the hub cannot be reached{why}; "
            "download it elsewhere and pass the folder or .pt file as --model PATH"
        )
    return load_hf_folder(folder, repo.split("/")[-1], f"hf-hub:{repo}")


def load_safetensors_file(path: Path) -> EsmPLM:
    """A lone ``.safetensors`` file in HF or fair-esm naming (config.json beside it is used if present).

    Without a config only ESM-2 can be read off the shapes: whether an ESM-1b-layout file was
    trained with token dropout is not in its weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (path.parent / "config.json").exists():
        return load_hf_folder(path.parent, path.stem)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    state = _normalise_names(state if any(k.startswith(("esm.", "embeddings.", "encoder.")) for k in state)
                             else _fairesm_to_hf(state))
    if "esm.embeddings.position_embeddings.weight" in state:
        raise InputError(f"{path}: learned position embeddings (ESM-1b layout) need a config.json beside the "
                         "file (token dropout cannot be read from the weights)")
    return EsmPLM(_from_state(state, None, source=str(path)), path.stem, str(path))


class EsmEnsemble(nn.Module):
    """Several masked LMs scored as one (ESM-1v's five members).

    Mutation scoring averages the members' scores (``bench.mutation.score_variants`` reads
    :attr:`members`). Other log-probability readers get logits equal to the members' mean
    log-probabilities: after the caller's log-softmax, a difference of log-probabilities at one
    position (masked or wild-type marginal) is exactly the members' mean. There is no shared
    embedding space: asking for hidden states is refused.
    """

    is_neural = True
    has_logits = True

    def __init__(self, members: list[EsmPLM], name: str) -> None:
        super().__init__()
        if not members or len({m.alphabet.tokens for m in members}) != 1:
            raise InputError(f"ensemble '{name}': needs one or more members with the same vocabulary")
        self.members = nn.ModuleList(members)
        self.name = name
        self.source = "ensemble:" + ",".join(m.source for m in members)
        self.alphabet = members[0].alphabet
        self.num_layers = min(m.num_layers for m in members)
        self.hidden_size = members[0].hidden_size
        self.max_residues = min(m.max_residues for m in members)

    @property
    def weights_hash(self) -> str:
        return hashlib.sha256(",".join(m.weights_hash for m in self.members).encode()).hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    def resolve_layer(self, layer: int) -> int:
        raise InputError(f"{self.name} is an ensemble for mutation scoring; embed with one of its members "
                         f"({', '.join(m.source for m in self.members)})")

    def forward(self, tokens: torch.Tensor, repr_layers: tuple[int, ...] | list[int] = (),
                return_logits: bool = True, inputs_embeds: torch.Tensor | None = None) -> PLMOutput:
        if repr_layers or not return_logits or inputs_embeds is not None:
            self.resolve_layer(-1)
        lp = torch.stack([torch.log_softmax(m(tokens, repr_layers=(), return_logits=True).logits.float(), -1)
                          for m in self.members])
        return PLMOutput(hidden={}, logits=lp.mean(0))


def load_ensemble(sources: list[str], name: str, load) -> EsmEnsemble:
    """An :class:`EsmEnsemble` of ``sources`` (each loaded by ``load``); every missing member is named."""
    members, missing, reason = [], [], ""
    for src in sources:
        try:
            members.append(load(src))
        except InputError as e:
            missing.append(src)
            reason = reason or str(e)
    if missing:
        raise InputError(f"ensemble '{name}': {len(missing)} of {len(sources)} members not available "
                         f"({', '.join(missing)}); first reason: {reason}")
    bad = [m.source for m in members if not isinstance(m, EsmPLM) or not m.has_logits]
    if bad:
        raise InputError(f"ensemble '{name}': member(s) {', '.join(bad)} have no masked-LM head")
    return EsmEnsemble(members, name)
