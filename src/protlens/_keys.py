"""Every AnnData slot name protlens reads or writes, in one place."""

# obs columns
ID = "id"
SEQUENCE = "sequence"
LENGTH = "length"

# obsm
X_TSNE = "X_tsne"
X_UMAP = "X_umap"
X_PCA = "X_pca"


def layer_key(layer: int) -> str:
    """obsm key holding the pooled embedding of one extra layer."""
    return f"X_layer{layer}"


# obsp
CONNECTIVITIES = "connectivities"
DISTANCES = "distances"

# uns
EMBED = "embed"
NEIGHBORS = "neighbors"
PER_RESIDUE = "per_residue_file"
EVALUATE = "evaluate"
EXPLAIN = "explain"


def cluster_key(method: str) -> str:
    """obs column holding one clustering's labels (also the uns key of its params)."""
    return method
