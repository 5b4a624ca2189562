"""The pipeline's report.html in a real browser (headless Chromium): no console messages, every
figure decoded, the interactive scatter drawn.

A small checker page loads the report in an iframe and writes what it sees (image sizes, number
of scatter points drawn) into its own DOM, which ``--dump-dom`` prints; console messages come
from Chromium's log on stderr. No DevTools protocol, no extra Python packages.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=60000"]  # --dump-dom waits for the report's asynchronous drawing

CHECKER = """<!DOCTYPE html><html><body>
<iframe id="report" src="report.html" style="width:1200px;height:900px"></iframe>
<script>
// share of pixels that are not (near) white: 0 for a blank image
function inked(img) {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
  return ink / (d.length / 4);
}
document.getElementById("report").addEventListener("load", async () => {
  const frame = document.getElementById("report");
  const doc = frame.contentDocument;
  await Promise.all(frame.contentWindow.protlensPlots || []);  // plotly.js is unpacked and drawn after load
  const result = {
    images: [...doc.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight, inked(i)]),
    plots: doc.querySelectorAll(".js-plotly-plot").length,
    points: doc.querySelectorAll(".scatterlayer .point").length,
    title: doc.title,
  };
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script></body></html>
"""


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A real pipeline report on a tiny synthetic set (k-mer model, two clusterings, no baselines)."""
    from protlens.datasets import synthetic_families
    from protlens.pipeline import run

    adata = synthetic_families(n_superfamilies=2, families_per_superfamily=2, subfamilies_per_family=1,
                               members_per_subfamily=4, length=60, random_state=0)
    out = tmp_path_factory.mktemp("report")
    run(adata, label_col="family", model="kmer", methods=("kmeans", "spectral"), n_clusters=None, out=out,
        projection="pca", baselines=(), n_boot=10, progress=False, formats=("png",))
    return out, adata.n_obs


def test_report_renders_without_console_errors(report_dir, tmp_path):
    out, n = report_dir
    (out / "check.html").write_text(CHECKER)
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           (out / "check.html").as_uri()], capture_output=True, text=True, timeout=300)
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], "browser console messages:\n" + "\n".join(console)
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"checker page did not run (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert result["title"].startswith("protlens")
    # panels, the k sweep and one contingency heatmap per clustering (automatic k and k = 4 classes),
    # each decoded to a real bitmap with something drawn on it
    names = {name for name, *_ in result["images"]}
    assert names == {"panels", "k_sweep", "contingency_kmeans", "contingency_kmeans_k4", "contingency_spectral",
                     "contingency_spectral_k4"}, names
    assert all(done and w > 100 and h > 100 for _, done, w, h, _ in result["images"]), result["images"]
    assert all(ink > 0.02 for *_, ink in result["images"]), result["images"]
    # the interactive scatter drew one point per sequence (first colouring visible)
    assert result["plots"] == 1
    assert result["points"] == n
