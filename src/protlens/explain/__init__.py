"""Explain cluster assignments residue by residue, and measure the explanations.

Surrogate CNN + Captum attributions (:mod:`.surrogate`, :mod:`.attribution`), end-to-end attribution
through the PLM, faithfulness by deletion curves (:mod:`.faithfulness`), plausibility on kinase motifs
(:mod:`.motifs`) and planted motifs (:mod:`.synthetic`), and k-means vs spectral overlap (:mod:`.compare`).
"""

from .api import cluster_labels, consensus_track, explain, per_residue_embeddings
from .attribution import METHODS, PLMClusterScore, SurrogateScore, attribute, residue_track
from .compare import jaccard_top, overlap_table
from .faithfulness import DeletionCurves, deletion_curves
from .motifs import enrichment, locate_kinase_motifs, motif_masks
from .surrogate import ClusterCNN, ClusterCNNEnsemble, SurrogateCNN
from .synthetic import planted_motif_auroc

__all__ = [
    "METHODS", "ClusterCNN", "ClusterCNNEnsemble", "DeletionCurves", "PLMClusterScore", "SurrogateCNN",
    "SurrogateScore", "attribute", "cluster_labels", "consensus_track", "deletion_curves", "enrichment", "explain",
    "jaccard_top", "locate_kinase_motifs", "motif_masks", "overlap_table",
    "per_residue_embeddings", "planted_motif_auroc", "residue_track",
]
