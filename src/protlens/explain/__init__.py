"""Explain cluster assignments residue by residue, and measure the explanations.

Surrogate CNN + Captum attributions (:mod:`.surrogate`, :mod:`.attribution`), end-to-end attribution
through the PLM, faithfulness by deletion curves (:mod:`.faithfulness`), plausibility on kinase motifs
(:mod:`.motifs`) and planted motifs (:mod:`.synthetic`), and k-means vs spectral overlap (:mod:`.compare`).
Names load on first use (``lazy_loader``), so the CLI starts without torch or Captum.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "api": ["cluster_labels", "consensus_track", "explain", "per_residue_embeddings"],
        "attribution": ["METHODS", "PLMClusterScore", "SurrogateScore", "attribute", "residue_track"],
        "compare": ["jaccard_top", "overlap_table"],
        "faithfulness": ["DeletionCurves", "deletion_curves"],
        "motifs": ["enrichment", "locate_kinase_motifs", "motif_masks"],
        "surrogate": ["ClusterCNN", "ClusterCNNEnsemble", "SurrogateCNN"],
        "synthetic": ["planted_motif_auroc"],
    },
)
