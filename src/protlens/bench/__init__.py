"""Downstream benchmark suite (ComproESM section 5, appendices C-I): one module per task, one runner."""

from .runner import HEADLINE, TASKS, random_init_model, resolve_model, resolve_tasks, run_bench

__all__ = ["HEADLINE", "TASKS", "random_init_model", "resolve_model", "resolve_tasks", "run_bench"]
