"""Figures: embedding panels (ground truth vs clusterings), contingency heatmaps, interactive scatter.

Static figures are matplotlib ``Figure`` objects built without pyplot (no global state, no GUI
backend needed); write them with :func:`save_figure` (PNG and SVG by default).
"""

from ._figures import FORMATS, contingency, contingency_table, embedding_panels, k_sweep, save_figure
from ._interactive import interactive_fragment, interactive_scatter, write_interactive
from ._styles import aligned_styles, category_styles, match_clusters, set_colors

__all__ = [
    "FORMATS", "aligned_styles", "category_styles", "contingency", "contingency_table", "embedding_panels",
    "interactive_fragment", "interactive_scatter", "k_sweep", "match_clusters", "save_figure",
    "set_colors", "write_interactive",
]
