"""Interactive plotly scatter: hover shows id, labels and clusters; a menu switches the colouring."""

from __future__ import annotations

import base64
import functools
import gzip
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import _keys as K
from ..errors import InputError
from ..io import atomic_path
from ._figures import BASIS_NAMES, _coords, _obs
from ._styles import MISSING_STYLE, aligned_styles, category_styles

#: matplotlib marker -> plotly symbol, so both kinds of figure draw a class the same way.
SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond", "v": "triangle-down", "P": "cross",
           "X": "x", "<": "triangle-left", ">": "triangle-right", "p": "pentagon", ".": "circle"}


def interactive_scatter(adata, color: Sequence[str], basis: str = K.X_TSNE, reference: str | None = None,
                        hover: Sequence[str] | None = None, title: str | None = None, max_points: int = 20_000,
                        random_state: int = 0):
    """A plotly figure of the 2-D coordinates, coloured by each column of ``color`` (menu to switch).

    Hover shows the record id and every ``hover`` column (default: all ``color`` columns), so a
    point can be traced back to its sequence. Colours follow :func:`embedding_panels`. Above
    ``max_points`` records a random subset of that size is drawn (the title says so), which keeps
    a report of a proteome at a few megabytes.
    """
    import plotly.graph_objects as go

    if isinstance(color, str):
        color = [color]
    if not color:
        raise InputError("interactive_scatter needs at least one obs column to colour by")
    ref_values = _obs(adata, reference).to_numpy() if reference is not None else None
    all_styles = {key: category_styles(_obs(adata, key).to_numpy()) if key == reference
                  else aligned_styles(ref_values, _obs(adata, key).to_numpy()) for key in color}  # before subsetting
    n_all = adata.n_obs
    if n_all > max_points:
        keep = np.sort(np.random.default_rng(random_state).choice(n_all, max_points, replace=False))
        adata = adata[keep]
        title = (title or f"{BASIS_NAMES.get(basis, basis)} of {n_all} sequences") + \
            f" (random {max_points} drawn)"
    xy = _coords(adata, basis)
    hover = list(dict.fromkeys(list(hover) if hover is not None else list(color)))
    ids = adata.obs_names.astype(str).to_numpy()
    custom = np.column_stack([ids] + [_obs(adata, h).astype(str).to_numpy() for h in hover])
    template = "<b>%{customdata[0]}</b><br>" + "<br>".join(
        f"{h}: %{{customdata[{j + 1}]}}" for j, h in enumerate(hover)) + "<extra></extra>"
    # WebGL only where SVG gets slow: headless browsers without a GPU cannot draw WebGL.
    trace = go.Scattergl if adata.n_obs > 5000 else go.Scatter
    fig = go.Figure()
    groups = []
    for i, key in enumerate(color):
        values = _obs(adata, key)
        styles = all_styles[key]
        names = np.where(values.isna(), "nan", values.astype(str).to_numpy())
        first = len(fig.data)
        for name in list(styles) + sorted(set(names) - set(styles)):
            sel = names == name
            if not sel.any():
                continue
            c, m = styles.get(name, MISSING_STYLE)
            fig.add_trace(trace(
                x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{name} ({int(sel.sum())})",
                legendgroup=key, visible=i == 0, customdata=custom[sel], hovertemplate=template,
                marker=dict(color=c, symbol=SYMBOLS.get(m, "circle"), size=7, line=dict(width=0.4, color="white"))))
        groups.append((key, first, len(fig.data)))
    if len(groups) > 1:
        buttons = [dict(label=key, method="update",
                        args=[{"visible": [a <= t < b for t in range(len(fig.data))]}, {"legend.title.text": key}])
                   for key, a, b in groups]
        fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=0, xanchor="left", y=1.12,
                                            yanchor="top", showactive=True)])
    fig.update_layout(title=dict(text=title or f"{BASIS_NAMES.get(basis, basis)} of {adata.n_obs} sequences", x=0.5),
                      legend=dict(title=dict(text=color[0]), itemsizing="constant", font=dict(size=10)),
                      xaxis=dict(showticklabels=False, title=""), yaxis=dict(showticklabels=False, title=""),
                      template="simple_white", width=900, height=650, margin=dict(t=80))
    return fig


#: Loads the gzipped plotly.js once per page (DecompressionStream: Chrome 80+, Firefox 113+,
#: Safari 16.4+); every figure on the page waits on ``window.protlensPlotly``.
_LOADER = """<script type="application/octet-stream" id="protlens-plotly-gz">{payload}</script>
<script>
window.protlensPlotly = window.protlensPlotly || (async () => {{
  if (typeof DecompressionStream === "undefined") throw new Error(
    "this browser cannot unpack the embedded plotly.js {version} (needs Chrome 80+, Firefox 113+ or Safari 16.4+)");
  const b64 = document.getElementById("protlens-plotly-gz").textContent.trim();
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const js = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  const s = document.createElement("script");
  s.text = js;
  document.head.appendChild(s);
  return window.Plotly;
}})();
</script>"""

_FIGURE = """<div id="{id}" class="protlens-plotly" style="width:{width}px;max-width:100%;height:{height}px"></div>
<script>
window.protlensPlots = (window.protlensPlots || []).concat([window.protlensPlotly.then(Plotly => {{
  const fig = {json};
  return Plotly.newPlot("{id}", fig.data, fig.layout, {{responsive: true, displaylogo: false}});
}}).catch(err => {{
  document.getElementById("{id}").textContent = "Interactive figure not drawn: " + err.message;
}})]);
</script>"""


@functools.lru_cache(maxsize=1)
def _plotly_loader() -> str:
    """plotly.js as gzip + base64 (1.9 MB instead of 4.8 MB), so a report stays self-contained and small."""
    import plotly
    from plotly.offline import get_plotlyjs

    payload = base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0))
    return _LOADER.format(payload=payload.decode("ascii"), version=plotly.__version__)


def interactive_fragment(fig, include_plotlyjs: bool = True) -> str:
    """An HTML block drawing ``fig``; with ``include_plotlyjs`` it carries the compressed plotly.js.

    Put the bundle in once per page: later fragments (``include_plotlyjs=False``) reuse it.
    """
    fig_id = f"protlens-plot-{uuid.uuid4().hex[:12]}"
    layout = fig.layout
    body = _FIGURE.format(id=fig_id, json=fig.to_json().replace("</", "<\\/"),  # no '</script>' inside the script
                          width=layout.width or 900, height=layout.height or 650)
    return (_plotly_loader() + "\n" + body) if include_plotlyjs else body


def write_interactive(fig, path: str | Path) -> Path:
    """Write a standalone HTML page with the figure (plotly.js inside, compressed, so it opens offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>protlens interactive figure</title>'
            f"</head><body>\n{interactive_fragment(fig)}\n</body></html>\n")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
