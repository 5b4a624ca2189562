"""ESM-2 from any source (HF hub name, local HF folder, fair-esm ``.pt``, safetensors) as one class.

Weights live in an HF ``EsmForMaskedLM`` (the format protlens trains and exports), or, for standard
ESM-2 checkpoints loaded for inference (HF folders and cached hub snapshots with model.safetensors,
fair-esm ``.pt``, lone safetensors), in a container with the same module names that does not import
transformers (:func:`_light_esm2`; :attr:`EsmPLM.hf` converts on demand). Inference runs through
:class:`EsmPLM.forward`, a lean re-implementation of the ESM-2 forward pass over those same
parameters: fused QKV projection, rotary embedding as one complex product with tables cached per
length, PyTorch SDPA attention, early exit after the deepest requested layer. Tests hold it to
<= 1e-4 of fair-esm and HF outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from dataclasses import dataclass
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

#: (layers, hidden) -> heads for the published ESM-2 sizes (needed when a checkpoint has no config).
ESM2_ARCHS = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}
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


def _fairesm_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename fair-esm ESM-2 parameters to HF ``EsmForMaskedLM`` names."""
    prefix = re.compile(r"^(encoder\.sentence_encoder\.|encoder\.)")
    state = {prefix.sub("", k): v for k, v in state.items()}
    layer_map = {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "self_attn_layer_norm": "attention.LayerNorm",
        "fc1": "intermediate.dense",
        "fc2": "output.dense",
        "final_layer_norm": "LayerNorm",
    }
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m and m.group(2) in layer_map:
            out[f"esm.encoder.layer.{m.group(1)}.{layer_map[m.group(2)]}.{m.group(3)}"] = v
        elif k == "embed_tokens.weight":
            out["esm.embeddings.word_embeddings.weight"] = v
        elif k.startswith("emb_layer_norm_after."):
            out["esm.encoder." + k] = v
        elif k == "lm_head.weight":
            out["lm_head.decoder.weight"] = v
        elif k.startswith("lm_head."):
            out[k] = v
        elif k.startswith("contact_head."):
            out["esm." + k] = v
        # rotary inv_freq buffers are recomputed
    return out


def _from_state(state: dict[str, torch.Tensor], num_heads: int | None, token_dropout: bool = True) -> nn.Module:
    """ESM-2 parameters (HF names) in :func:`_light_esm2`'s container, the architecture read off the shapes."""
    try:
        hidden = state["esm.embeddings.word_embeddings.weight"].shape[1]
        layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"esm\.encoder\.layer\.(\d+)\.", k)))
        inter = state["esm.encoder.layer.0.intermediate.dense.weight"].shape[0]
    except (KeyError, ValueError):
        raise InputError("checkpoint does not hold ESM-2 parameters (no token embedding or encoder layers)") from None
    heads = num_heads or _HEADS_BY_SHAPE.get((layers, hidden))
    if heads is None:
        raise InputError(
            f"checkpoint with {layers} layers x {hidden} dims is not a published ESM-2 size: "
            "pass a folder with config.json to give the number of attention heads"
        )
    cfg = _esm2_config_dict(layers, hidden, heads, token_dropout=token_dropout, intermediate_size=inter)
    try:
        return _light_esm2(cfg, state)
    except RuntimeError as e:  # load_state_dict(strict=True): a line each for missing and unexpected keys
        detail = "; ".join(line.strip() for line in str(e).splitlines()[1:])
        raise InputError(f"checkpoint does not match ESM-2: {detail[:300]}") from None


def load_fairesm_checkpoint(path: Path) -> nn.Module:
    """Read a fair-esm ``.pt`` safely: ``weights_only=True`` with only ``argparse.Namespace`` allowed."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling error names the forbidden global
        raise InputError(f"{path}: not a loadable fair-esm checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or "model" not in data:
        raise InputError(f"{path}: no 'model' state dict in checkpoint")
    cfg = data.get("cfg", {})
    cfg = cfg.get("model", cfg) if isinstance(cfg, dict) else cfg
    heads = getattr(cfg, "encoder_attention_heads", None)
    token_dropout = bool(getattr(cfg, "token_dropout", True))
    return _from_state(_fairesm_to_hf(data["model"]), heads, token_dropout)


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


class _Node(nn.Module):
    """A plain container holding children under HF ``EsmForMaskedLM``'s attribute names."""

    def __init__(_node, **children: nn.Module) -> None:  # noqa: N805 - HF has a child named "self"
        super().__init__()
        for k, v in children.items():
            _node.add_module(k, v)


#: config.json values the transformers-free loader understands (None = key may be absent); anything
#: else goes through transformers. position_embedding_type must be explicit: EsmConfig's default is
#: "absolute" (ESM-1b), which this loader does not implement.
_LIGHT_CONFIG = {"model_type": ("esm",), "position_embedding_type": ("rotary",), "hidden_act": ("gelu", None),
                 "emb_layer_norm_before": (False, None), "is_folding_model": (False, None),
                 "esmfold_config": (None,), "vocab_size": (len(ESM_ALPHABET),)}


def _light_config_ok(cfg: dict) -> bool:
    return all(cfg.get(key) in allowed for key, allowed in _LIGHT_CONFIG.items())


def _light_esm2(cfg: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """ESM-2's parameters in HF's module layout, built without importing transformers.

    Importing transformers costs ~2.3 s and ~135 MB before the first sequence is embedded
    (BENCHMARKS.md); inference needs only the tensors, and :attr:`EsmPLM.hf` builds the real HF
    model from them when training or export asks for it.
    """
    D, L, H = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    inter, eps = cfg.get("intermediate_size", 3072), cfg.get("layer_norm_eps", 1e-12)

    def layer() -> nn.Module:
        attention = _Node(self=_Node(query=nn.Linear(D, D), key=nn.Linear(D, D), value=nn.Linear(D, D)),
                          output=_Node(dense=nn.Linear(D, D)), LayerNorm=nn.LayerNorm(D, eps=eps))
        return _Node(attention=attention, intermediate=_Node(dense=nn.Linear(D, inter)),
                     output=_Node(dense=nn.Linear(inter, D)), LayerNorm=nn.LayerNorm(D, eps=eps))

    with torch.device("meta"):
        esm = _Node(embeddings=_Node(word_embeddings=nn.Embedding(len(ESM_ALPHABET), D)),
                    encoder=_Node(layer=nn.ModuleList(layer() for _ in range(L)),
                                  emb_layer_norm_after=nn.LayerNorm(D, eps=eps)))
        if "esm.contact_head.regression.weight" in state:
            esm.add_module("contact_head", _Node(regression=nn.Linear(L * H, 1)))
        lm_head = _Node(dense=nn.Linear(D, D), layer_norm=nn.LayerNorm(D, eps=eps),
                        decoder=nn.Linear(D, len(ESM_ALPHABET), bias=False))
        lm_head.bias = nn.Parameter(torch.empty(len(ESM_ALPHABET)))
        net = _Node(esm=esm, lm_head=lm_head)
    # transformers writes ESM's layer norms under their legacy names (LayerNorm.gamma / .beta)
    state = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v.float()
             for k, v in state.items() if "rotary" not in k and "position_ids" not in k}
    tied = cfg.get("tie_word_embeddings", True)  # EsmConfig's default
    if tied or "lm_head.decoder.weight" not in state:
        state["lm_head.decoder.weight"] = state["esm.embeddings.word_embeddings.weight"]
    net.load_state_dict(state, strict=True, assign=True)
    if tied:
        lm_head.decoder.weight = esm.embeddings.word_embeddings.weight
    # EsmConfig's defaults for what EsmPLM reads
    net.config = SimpleNamespace(**{"token_dropout": False, "max_position_embeddings": 1026, **cfg})
    return net


@dataclass
class PLMOutput:
    """What one forward pass returns: hidden states by layer (0 = embeddings) and optional logits."""

    hidden: dict[int, torch.Tensor]
    logits: torch.Tensor | None = None


class EsmPLM(nn.Module):
    """An ESM-2 model ready for inference and scoring, whatever file it came from."""

    has_logits = True
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
        # ESM-2 was trained on 1024-token crops (1022 residues + BOS/EOS); HF configs say 1026
        self.max_residues: int = min(cfg.max_position_embeddings - 4, 1022)
        self.token_dropout: bool = bool(cfg.token_dropout)
        self._rope_cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._fused: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._fused_version: tuple[int, ...] = ()

    @property
    def hf(self) -> nn.Module:
        """The weights as a transformers ``EsmForMaskedLM`` (for training and export), built on first use."""
        if isinstance(self.net, _Node):
            from transformers import EsmConfig, EsmForMaskedLM

            cfg = {k: v for k, v in vars(self.net.config).items() if not k.startswith("_")}
            model = EsmForMaskedLM(EsmConfig(**cfg))
            model.load_state_dict(self.net.state_dict(), strict=False)
            self.net = model.to(device=self.device, dtype=self.dtype).eval()
            self._fused = None
        return self.net

    # -- provenance -------------------------------------------------------------------------------
    @property
    def weights_hash(self) -> str:
        """sha256 over all parameters (name + bytes), stable across file formats.

        The contact head is left out: embeddings never use it, and files without one get a random
        one from transformers.
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
        self._fused = None
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

    def _rope(self, length: int, device: torch.device) -> torch.Tensor:
        """Complex rotary phases [length, d/2] (ESM-2's frequencies), cached per length."""
        key = (length, device)
        if key not in self._rope_cache:
            if len(self._rope_cache) > 64:
                self._rope_cache.clear()
            dim = self.hidden_size // self.num_heads
            with torch.inference_mode(False):  # usable both under inference_mode and autograd
                inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
                freqs = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv)
                self._rope_cache[key] = torch.polar(torch.ones_like(freqs), freqs)
        return self._rope_cache[key]

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings with ESM-2's token-dropout rescaling (layer 0 of the model)."""
        x = self.net.esm.embeddings.word_embeddings(tokens)
        return self._scale_embeddings(x, tokens)

    def _scale_embeddings(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        pad = tokens.eq(self.alphabet.pad_idx)
        if self.token_dropout:
            is_mask = tokens.eq(self.alphabet.mask_idx)
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / (~pad).sum(-1).to(x.dtype)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
        return x.masked_fill(pad.unsqueeze(-1), 0.0)

    def forward(self, tokens: torch.Tensor, repr_layers: tuple[int, ...] | list[int] = (-1,),
                return_logits: bool = False, inputs_embeds: torch.Tensor | None = None) -> PLMOutput:
        """Hidden states of ``repr_layers`` (fair-esm numbering: 0 = embeddings, -1 = last).

        ``inputs_embeds`` (already scaled, as from :meth:`embed_tokens`) lets attribution methods
        differentiate with respect to the embedding layer.
        """
        layers = sorted({self.resolve_layer(i) for i in repr_layers})
        deepest = self.num_layers if return_logits else (layers[-1] if layers else 0)
        x = self.embed_tokens(tokens) if inputs_embeds is None else inputs_embeds
        pad = tokens.eq(self.alphabet.pad_idx)
        B, T, D = x.shape
        H = self.num_heads
        mask = None if not pad.any() else (~pad)[:, None, None, :]
        rot = self._rope(T, x.device)
        hidden: dict[int, torch.Tensor] = {}
        if 0 in layers:
            hidden[0] = x
        fused = self._fused_qkv()
        enc = self.net.esm.encoder
        for i in range(deepest):
            layer = enc.layer[i]
            att = layer.attention
            h = F.layer_norm(x, (D,), att.LayerNorm.weight, att.LayerNorm.bias, att.LayerNorm.eps)
            qkv = F.linear(h, *fused[i]).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            q, k = _rotate(qkv[:2], rot)
            # a contiguous V: the CPU flash kernel runs ~8% faster than on the strided view (T=1024)
            a = F.scaled_dot_product_attention(q, k, qkv[2].contiguous(), attn_mask=mask, scale=1.0)
            a = a.transpose(1, 2).reshape(B, T, D)
            x = x + att.output.dense(a)
            h = F.layer_norm(x, (D,), layer.LayerNorm.weight, layer.LayerNorm.bias, layer.LayerNorm.eps)
            x = x + layer.output.dense(F.gelu(layer.intermediate.dense(h)))
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


def load_hf_folder(folder: Path, name: str | None = None) -> EsmPLM:
    """Load a local HF ESM folder (config.json + safetensors/bin weights).

    A standard ESM-2 folder with one ``model.safetensors`` loads without transformers
    (:func:`_light_esm2`); other layouts (``.bin``, sharded, other ESM variants) go through it.
    """
    check_vocab(folder)
    light = _load_light(folder)
    if light is not None:
        return EsmPLM(light, name or folder.name, str(folder))
    from transformers import EsmForMaskedLM

    try:
        model = EsmForMaskedLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise InputError(f"{folder}: cannot load as an HF ESM model ({str(e).splitlines()[0]})") from None
    return EsmPLM(model, name or folder.name, str(folder))


def _load_light(folder: Path) -> nn.Module | None:
    """:func:`_light_esm2` for a standard ESM-2 folder; ``None`` when transformers must read it."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    weights, config = folder / "model.safetensors", folder / "config.json"
    if not (weights.exists() and config.exists()):
        return None
    try:
        cfg = json.loads(config.read_text())
        if not _light_config_ok(cfg):
            return None
        with safe_open(weights, framework="pt") as f:  # names only: a fallback must not read the tensors twice
            keys = set(f.keys())
        if not all(k.startswith(("esm.", "lm_head.")) for k in keys) or "lm_head.bias" not in keys:
            return None  # a base EsmModel or another naming: transformers maps it
        return _light_esm2(cfg, load_file(weights))
    except (json.JSONDecodeError, SafetensorError, KeyError, RuntimeError) as e:
        raise InputError(f"{folder}: cannot load as an HF ESM model ({str(e).splitlines()[0]})") from None


def _cached_light(repo: str) -> nn.Module | None:
    """:func:`_load_light` on the HF cache's snapshot of ``repo`` when its config and safetensors are there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = [try_to_load_from_cache(repo, name) for name in ("config.json", "model.safetensors")]
    except ValueError:  # not a valid repo id: transformers' path gives the user-facing error
        return None
    if not all(isinstance(f, str) for f in found) or Path(found[0]).parent != Path(found[1]).parent:
        return None
    folder = Path(found[0]).parent
    check_vocab(folder)
    return _load_light(folder)


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

    A cached standard snapshot (the facebook/esm2_* repos carry model.safetensors) loads without
    importing transformers, as a local folder does.
    """
    light = _cached_light(repo)
    if light is not None:
        return EsmPLM(light, repo.split("/")[-1], f"hf-hub:{repo}")
    from transformers import EsmForMaskedLM

    from huggingface_hub import try_to_load_from_cache

    last: Exception | None = None
    for local_only in (True, False):
        if local_only and not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            continue  # nothing cached under this name: no need to ask transformers
        if not local_only and hub_unreachable():
            break
        try:
            model = EsmForMaskedLM.from_pretrained(repo, dtype=torch.float32, local_files_only=local_only)
            return EsmPLM(model, repo.split("/")[-1], f"hf-hub:{repo}")
        except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
            last = e
    raise InputError(
        f"model '{repo}' is not in the local Hugging Face cache and the hub cannot be reached "
        f"({type(last).__name__ if last is not None else 'offline'}); download it elsewhere and pass the folder "
        "or .pt file as --model PATH"
    )


def load_safetensors_file(path: Path) -> EsmPLM:
    """A lone ``.safetensors`` file in HF or fair-esm naming (config.json beside it is used if present)."""
    from safetensors.torch import load_file

    if (path.parent / "config.json").exists():
        return load_hf_folder(path.parent, path.stem)
    state = load_file(path)
    model = _from_state(state if any(k.startswith("esm.") for k in state) else _fairesm_to_hf(state), None)
    return EsmPLM(model, path.stem, str(path))
