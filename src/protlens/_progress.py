"""Progress on stderr for long steps (rich), and the time each step took.

Every step that can take more than a few seconds shows that it is running: a bar with a time
estimate where the number of items is known (:func:`track`), a spinner with the elapsed time
otherwise (:class:`Steps`). Both are silent when disabled (tests, ``--no-progress``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def _console():
    from rich.console import Console

    return Console(stderr=True)


def shown(enabled: bool) -> bool:
    """Progress is drawn only when asked for and stderr is a terminal (logs and pipes get no spinner frames)."""
    return enabled and _console().is_terminal


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
          label: Callable[[T], str] | None = None) -> Iterator[T]:
    """Iterate with a progress bar (count, elapsed, time remaining) on stderr.

    ``label(item)``, when given, replaces the description while that item is being worked on.
    """
    if not shown(enabled):
        yield from items
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(*columns, console=_console()) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            if label is not None:
                bar.update(task, description=f"{description}: {label(item)}")
            yield item
            bar.advance(task)


class Steps:
    """Named steps with a spinner and elapsed time while each runs; ``seconds`` keeps each step's total."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = shown(enabled)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, description: str | None = None) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            if self.enabled:
                from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                              console=_console()) as p:
                    p.add_task(description or name, total=None)
                    yield
            else:
                yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 2)
