"""Progress output (protlens._progress) as a terminal user sees it."""

from __future__ import annotations

import io

from rich.console import Console

from protlens import _progress


def _terminal(monkeypatch) -> io.StringIO:
    buf = io.StringIO()
    monkeypatch.setattr(_progress, "_console", lambda: Console(file=buf, force_terminal=True, width=120))
    return buf


def test_track_names_the_item_in_work_and_counts(monkeypatch):
    buf = _terminal(monkeypatch)
    units = [("kmer", "family"), ("kmer", "homology")]
    seen = list(_progress.track(units, "bench", label=lambda u: f"{u[0]} / {u[1]}"))
    assert seen == units
    out = buf.getvalue()
    assert "bench: kmer / homology" in out and "2/2" in out


def test_nothing_is_drawn_when_disabled_or_not_a_terminal(monkeypatch):
    buf = _terminal(monkeypatch)
    assert list(_progress.track(range(3), "x", enabled=False)) == [0, 1, 2]
    assert buf.getvalue() == ""
    monkeypatch.setattr(_progress, "_console", lambda: Console(file=io.StringIO(), force_terminal=False))
    steps = _progress.Steps()
    with steps("cluster"):
        pass
    assert not steps.enabled and set(steps.seconds) == {"cluster"}
