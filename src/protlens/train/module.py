"""The ComproESM network: an ESM-2 encoder, an MLM head and a clustering head, family/superfamily nodes.

Losses are returned as sums with their counts (:class:`LossSums`) so the trainer can normalise by the
*global* number of masked tokens and labelled proteins of an optimizer step: the gradient is then the
same however the step is split over processes and micro-batches (tested).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ESM_ALPHABET

OBJECTIVES = ("mlm", "graph", "mlm+graph")
#: Where the link-prediction score is computed: ``mlp`` (a separate two-layer projection of P, the
#: paper's "two distinct fully connected networks"), ``linear`` (one linear map of P) or ``none``
#: (the inner product on the pooled protein vector P itself, eq. 7: the space downstream tasks use).
CLUSTER_HEADS = ("mlp", "linear", "none")


def make_cluster_head(kind: str, hidden: int, dim: int) -> nn.Module:
    """The clustering head of one of :data:`CLUSTER_HEADS`, mapping P (``hidden``) to ``dim``."""
    if kind == "mlp":
        return nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, dim))
    if kind == "linear":
        return nn.Linear(hidden, dim)
    if kind == "none":
        if dim != hidden:
            raise ValueError(f"cluster head 'none' scores P itself: cluster_dim must be 0 or {hidden}, not {dim}")
        return nn.Identity()
    raise ValueError(f"cluster head must be one of {CLUSTER_HEADS}, not '{kind}'")


def load_cluster_head(folder: str | Path, hidden: int) -> nn.Module | None:
    """The trained clustering head of an export folder (None for runs without a graph objective)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "protlens_heads.safetensors"
    if not path.exists():
        return None
    conf_file = folder / "training_config.json"
    kind = json.loads(conf_file.read_text()).get("cluster_head", "mlp") if conf_file.exists() else "mlp"
    tensors = load_file(str(path))
    head = make_cluster_head(kind, hidden, tensors["family_nodes"].shape[1])
    head.load_state_dict({k[len("cluster_head."):]: v.float() for k, v in tensors.items()
                          if k.startswith("cluster_head.")})
    return head.eval()


@dataclass
class LossSums:
    """Per-micro-batch sums (not means) of each loss term, with the counts they are sums over."""

    mlm_sum: torch.Tensor
    n_masked: torch.Tensor
    family_sum: torch.Tensor
    superfamily_sum: torch.Tensor
    n_graph: torch.Tensor


@dataclass
class LossOutput:
    """Named loss terms of one step: ``total = mlm + graph_weight * (w family + (1 - w) superfamily)``."""

    total: torch.Tensor
    mlm: torch.Tensor
    family: torch.Tensor
    superfamily: torch.Tensor
    commu: torch.Tensor


def community_loss(z: torch.Tensor, nodes: torch.Tensor, target: torch.Tensor,
                   candidates: torch.Tensor | None = None, normalize: bool = False,
                   temperature: float = 1.0) -> torch.Tensor:
    """Per-protein -log softmax of the score of its own node (inner-product link prediction).

    ``candidates`` (sorted, unique node ids) restricts the softmax to those nodes: the published
    in-batch softmax uses the nodes of the proteins in the batch, each node once, so proteins that
    share a family are never each other's negatives. ``candidates=None`` is the full softmax over all
    nodes (proxy-NCA); ``normalize`` puts proteins and nodes on the unit sphere (cosine scores).
    """
    if candidates is None:
        W, tgt = nodes, target
    else:
        W = nodes[candidates]
        tgt = torch.searchsorted(candidates, target)
    if normalize:
        z = F.normalize(z, dim=-1)
        W = F.normalize(W, dim=-1)
    logits = z @ W.T / temperature
    return F.cross_entropy(logits.float(), tgt, reduction="none")


def residue_mean(hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean over residue positions (no BOS/EOS/pad): the paper's protein vector P."""
    keep = ~(input_ids.eq(ESM_ALPHABET.pad_idx) | input_ids.eq(ESM_ALPHABET.cls_idx) | input_ids.eq(ESM_ALPHABET.eos_idx))
    keep = keep.unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


class ComproModule(nn.Module):
    """ESM-2 (an HF ``EsmForMaskedLM``) + clustering head + family/superfamily node tables.

    The MLM head is ESM-2's own ``lm_head`` (dense, GELU, LayerNorm, decoder); the clustering head
    (``head``, one of :data:`CLUSTER_HEADS`) maps the protein vector P into the clustering space: by
    default a separate network of the same shape, as the paper prescribes two separate projections.
    """

    def __init__(self, hf_model, n_families: int = 0, n_superfamilies: int = 0, cluster_dim: int = 0,
                 objective: str = "mlm+graph", softmax: str = "batch", normalize: bool = False,
                 temperature: float = 1.0, head: str = "mlp") -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        self.hf = hf_model
        contact = getattr(getattr(hf_model, "esm", None), "contact_head", None)
        if contact is not None:  # not trained here; frozen so DDP does not wait for its gradients
            contact.requires_grad_(False)
        self.objective = objective
        self.softmax = softmax
        self.normalize = normalize
        self.temperature = temperature
        self.use_mlm = "mlm" in objective
        self.use_graph = "graph" in objective
        if self.use_graph:
            D = hf_model.config.hidden_size
            d = cluster_dim or D
            self.cluster_head = make_cluster_head(head, D, d)
            self.family_nodes = nn.Parameter(torch.randn(n_families, d) / math.sqrt(d))
            self.superfamily_nodes = nn.Parameter(torch.randn(n_superfamilies, d) / math.sqrt(d))

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.hf.esm(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def protein_vectors(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Clustering-space vectors: the clustering head applied to the mean residue state P."""
        return self.cluster_head(residue_mean(hidden, input_ids))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                family: torch.Tensor, superfamily: torch.Tensor,
                family_candidates: torch.Tensor | None = None,
                superfamily_candidates: torch.Tensor | None = None) -> LossSums:
        hidden = self.encode(input_ids, attention_mask)
        zero = hidden.new_zeros((), dtype=torch.float32)
        mlm_sum, n_masked = zero, torch.zeros((), dtype=torch.long, device=hidden.device)
        if self.use_mlm:
            sel = labels.ne(-100)
            logits = self.hf.lm_head(hidden[sel])
            mlm_sum = F.cross_entropy(logits.float(), labels[sel], reduction="sum")
            n_masked = sel.sum()
        fam_sum, sf_sum = zero, zero
        n_graph = torch.zeros((), dtype=torch.long, device=hidden.device)
        if self.use_graph:
            has = family.ge(0) & superfamily.ge(0)
            z = self.protein_vectors(hidden, input_ids)
            if has.any():
                z = z[has]
                fc = None if self.softmax == "full" else family_candidates
                sc = None if self.softmax == "full" else superfamily_candidates
                fam_sum = community_loss(z, self.family_nodes, family[has], fc, self.normalize, self.temperature).sum()
                sf_sum = community_loss(z, self.superfamily_nodes, superfamily[has], sc, self.normalize, self.temperature).sum()
                n_graph = has.sum()
            else:  # keep every parameter in the graph so DDP sees the same parameters on all ranks
                fam_sum = fam_sum + 0.0 * (z.sum() + self.family_nodes.sum() + self.superfamily_nodes.sum())
        return LossSums(mlm_sum, n_masked, fam_sum, sf_sum, n_graph)


def combine(sums: LossSums, n_masked: float, n_graph: float, w: float, graph_weight: float = 1.0) -> LossOutput:
    """Normalise sums by global counts into the published L_model = L_MLM + L_commu."""
    mlm = sums.mlm_sum / max(n_masked, 1.0)
    fam = sums.family_sum / max(n_graph, 1.0)
    sf = sums.superfamily_sum / max(n_graph, 1.0)
    commu = w * fam + (1 - w) * sf
    return LossOutput(mlm + graph_weight * commu, mlm, fam, sf, commu)
