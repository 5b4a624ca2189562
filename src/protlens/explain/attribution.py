"""Attribution of a cluster assignment to residues (and embedding dimensions) with Captum.

Two explained models share one score, the log-odds of the assigned cluster against all others,
``z_k - logsumexp_{j != k} z_j``. Unlike a softmax probability it does not saturate for confident
assignments (plain gradients of ``log p_k`` vanish as ``p_k -> 1``), and unlike a raw logit it says
why *this* cluster rather than another:

* :class:`SurrogateScore`: ``z`` = logits of the surrogate CNN over per-residue embeddings; the
  attribution map is position x embedding dimension (the published figure's form).
* :class:`PLMClusterScore`: ``z_j = -||mean-pooled PLM state - centre_j||^2 / tau``, the nearest-centre
  rule of k-means run through the language model itself; attributions are taken on the
  token-embedding layer, so no surrogate stands between the residues and the clustering.

Baselines (integrated gradients, deletion) are zero vectors, which is also what ESM-2's token dropout
feeds the network for a ``<mask>`` token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .._progress import track
from ..errors import InputError

METHODS = ("saliency", "grad_x_input", "integrated_gradients", "smoothgrad")
ALIASES = {"grad": "saliency", "gradient": "saliency", "gxi": "grad_x_input", "input_x_gradient": "grad_x_input",
           "ig": "integrated_gradients", "sg": "smoothgrad"}
AGGREGATES = ("positive", "sum", "l2", "abs_sum")


def resolve_methods(methods: Sequence[str]) -> list[str]:
    """Canonical method names (aliases such as ``ig`` accepted), in the order given."""
    out = []
    for m in methods:
        name = ALIASES.get(m.strip().lower(), m.strip().lower())
        if name not in METHODS:
            raise InputError(f"unknown attribution method '{m}' (choose from {', '.join(METHODS)} or ig, gxi, sg)")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError("no attribution method given")
    return out


def one_vs_rest(z: torch.Tensor) -> torch.Tensor:
    """Log-odds of each class against all others: ``z_k - logsumexp_{j != k} z_j`` ([B, k])."""
    k = z.shape[1]
    eye = torch.eye(k, dtype=torch.bool, device=z.device)
    others = z.unsqueeze(1).expand(-1, k, -1).masked_fill(eye, float("-inf"))
    return z - torch.logsumexp(others, dim=2)


class SurrogateScore(nn.Module):
    """Cluster log-odds of a fitted surrogate CNN (one protein per row).

    For a :class:`~protlens.explain.surrogate.ClusterCNNEnsemble` the score is the mean of the members'
    log-odds, so that (attributions being linear in the model) the ensemble's explanation is exactly
    the mean of its members' explanations.
    """

    def __init__(self, cnn: nn.Module) -> None:
        super().__init__()
        self.cnn = cnn.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        members = getattr(self.cnn, "members", [self.cnn])
        return torch.stack([one_vs_rest(m(x)) for m in members]).mean(0)


class PLMClusterScore(nn.Module):
    """Cluster log-odds from the PLM's mean-pooled state and cluster centres in that space.

    ``forward(inputs_embeds, tokens)``: ``inputs_embeds`` as from ``EsmPLM.embed_tokens(tokens)``.
    """

    def __init__(self, plm: nn.Module, centres: np.ndarray, layer: int = -1, tau: float = 1.0) -> None:
        super().__init__()
        self.plm = plm.eval()
        self.layer = plm.resolve_layer(layer)
        self.register_buffer("centres", torch.as_tensor(centres, dtype=torch.float32))
        self.tau = float(tau)

    def pooled(self, inputs_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[0] != inputs_embeds.shape[0]:
            tokens = tokens.expand(inputs_embeds.shape[0], -1)
        hid = self.plm(tokens, repr_layers=(self.layer,), inputs_embeds=inputs_embeds).hidden[self.layer]
        a = self.plm.alphabet
        res = (tokens != a.pad_idx) & (tokens != a.cls_idx) & (tokens != a.eos_idx)
        m = res.unsqueeze(-1).to(hid.dtype)
        return (hid * m).sum(1) / m.sum(1)

    def forward(self, inputs_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(self.pooled(inputs_embeds, tokens), self.centres).pow(2)
        return one_vs_rest(-d2 / self.tau)


def attribute(model: nn.Module, inputs: torch.Tensor, target: int, method: str,
              baselines: torch.Tensor | None = None, additional_forward_args=None, n_steps: int = 32,
              nt_samples: int = 16, noise: float = 0.15, internal_batch_size: int | None = None) -> torch.Tensor:
    """One Captum attribution of ``model(inputs)[:, target]``, same shape as ``inputs``.

    ``saliency`` is |gradient| (Simonyan et al.), ``grad_x_input`` gradient * input,
    ``integrated_gradients`` IG from ``baselines`` (zeros by default) in ``n_steps``, ``smoothgrad``
    |gradient| averaged over ``nt_samples`` copies with Gaussian noise of sd ``noise`` x the input's
    value range (Smilkov et al. recommend 10-20%).
    """
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    method = resolve_methods([method])[0]
    sd = noise * float(inputs.max() - inputs.min())
    inputs = inputs.detach().clone().requires_grad_(True)
    kw = dict(target=int(target), additional_forward_args=additional_forward_args)
    if method == "saliency":
        return Saliency(model).attribute(inputs, abs=True, **kw).detach()
    if method == "grad_x_input":
        return InputXGradient(model).attribute(inputs, **kw).detach()
    if method == "integrated_gradients":
        base = torch.zeros_like(inputs) if baselines is None else baselines
        return IntegratedGradients(model).attribute(inputs, baselines=base, n_steps=n_steps,
                                                    internal_batch_size=internal_batch_size, **kw).detach()
    return NoiseTunnel(Saliency(model)).attribute(inputs, nt_type="smoothgrad", nt_samples=nt_samples,
                                                  nt_samples_batch_size=nt_samples, stdevs=sd, abs=True, **kw).detach()


def residue_track(attr_map: np.ndarray, aggregate: str = "positive") -> np.ndarray:
    """Per-residue importance from a position x dimension map.

    ``positive`` (default): the signed sum over dimensions clipped at zero. For gradient x input and
    integrated gradients the signed sum is the residue's share of the score (IG's completeness), so
    a residue matters for the assignment as far as it pushes towards the assigned cluster; residues
    arguing against it are no evidence for it, and clipping keeps tracks non-negative so ratios
    (enrichment, consensus) stay defined. For saliency and SmoothGrad (|gradient|) it is the L1 norm.
    Size-only aggregates (``l2``, ``abs_sum``) also rank residues that oppose the assignment high;
    on planted motifs they recovered fewer motif residues (AUROC 0.87 vs 0.92 for IG).
    ``sum``: the signed sum itself.
    """
    if aggregate in ("positive", "sum"):
        total = attr_map.astype(np.float64).sum(1)
        return (np.maximum(total, 0.0) if aggregate == "positive" else total).astype(np.float32)
    if aggregate == "l2":
        return np.sqrt((attr_map.astype(np.float64) ** 2).sum(1)).astype(np.float32)
    if aggregate == "abs_sum":
        return np.abs(attr_map).sum(1).astype(np.float32)
    raise InputError(f"unknown aggregate '{aggregate}' (choose from {', '.join(AGGREGATES)})")


Tracks = dict[str, list[np.ndarray]]
Maps = dict[str, dict[int, np.ndarray]]


def attribute_proteins(model: nn.Module, items: Iterable[tuple[torch.Tensor, torch.Tensor | None, tuple | None, slice]],
                       targets: Sequence[int], methods: Sequence[str], keep_maps: Sequence[int] = (),
                       aggregate: str = "positive", n_steps: int = 32, nt_samples: int = 16, noise: float = 0.15,
                       random_state: int = 0, progress: str | None = None) -> tuple[Tracks, Maps]:
    """Every method on every protein: residue tracks for all, position x dimension maps for ``keep_maps``.

    ``items`` yields, per protein, ``(inputs [1, T, D], baselines or None, additional_forward_args,
    rows)`` where ``rows`` selects the residue rows of the attribution (e.g. dropping BOS/EOS).
    ``progress``: a description for a progress bar over the proteins (none when None).
    """
    methods = resolve_methods(methods)
    keep = set(keep_maps)
    tracks: Tracks = {m: [] for m in methods}
    maps: Maps = {m: {} for m in methods}
    with torch.random.fork_rng():
        torch.manual_seed(random_state)
        for i, ((inputs, base, args, rows), t) in enumerate(track(zip(items, targets), progress or "", len(targets),
                                                                  enabled=progress is not None)):
            for m in methods:
                a = attribute(model, inputs, t, m, baselines=base, additional_forward_args=args, n_steps=n_steps,
                              nt_samples=nt_samples, noise=noise, internal_batch_size=n_steps)[0, rows]
                a = a.cpu().numpy()
                tracks[m].append(residue_track(a, aggregate))
                if i in keep:
                    maps[m][i] = a.astype(np.float32)
    return tracks, maps


def explain_surrogate(cnn: nn.Module, X: Sequence[np.ndarray], targets: Sequence[int], methods: Sequence[str],
                      **kwargs) -> tuple[Tracks, Maps]:
    """:func:`attribute_proteins` for the surrogate on per-residue embeddings ``X`` (zero baseline)."""
    items = ((torch.as_tensor(x, dtype=torch.float32).unsqueeze(0), None, None, slice(None)) for x in X)
    return attribute_proteins(SurrogateScore(cnn), items, targets, methods, **kwargs)


def plm_centres(pooled: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, float]:
    """Cluster centres in the PLM's pooled space and ``tau``, the median squared distance to one's own centre."""
    centres = np.stack([pooled[labels == c].mean(0) for c in classes])
    own = ((pooled - centres[np.searchsorted(classes, labels)]) ** 2).sum(1)
    return centres.astype(np.float32), float(max(np.median(own), 1e-6))


def explain_plm(score: PLMClusterScore, seqs: Sequence[str], targets: Sequence[int], methods: Sequence[str],
                **kwargs) -> tuple[Tracks, Maps]:
    """:func:`attribute_proteins` through the PLM on the token-embedding layer; BOS/EOS rows are dropped.

    The baseline replaces every residue's embedding by zeros (what token dropout feeds for ``<mask>``)
    and keeps BOS/EOS.
    """
    plm = score.plm
    for i, s in enumerate(seqs):
        if len(s) > plm.max_residues:
            raise InputError(f"protein {i}: {len(s)} residues exceed {plm.name}'s {plm.max_residues} "
                             "for end-to-end attribution (use the surrogate)")

    def items():
        for s in seqs:
            toks = torch.from_numpy(plm.alphabet.batch([s])[0]).to(plm.device)
            with torch.no_grad():
                emb = plm.embed_tokens(toks)
            base = emb.clone()
            base[:, 1 : len(s) + 1] = 0.0
            yield emb, base, (toks,), slice(1, len(s) + 1)

    return attribute_proteins(score, items(), targets, methods, **kwargs)
