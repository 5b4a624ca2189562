"""Downstream benchmark suite (ComproESM section 5, appendices C-I): one module per task, one runner.

Names load on first use (``lazy_loader``), so ``protlens --help`` does not import the runner's
scientific stack.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={"runner": ["HEADLINE", "TASKS", "random_init_model", "resolve_model", "resolve_tasks",
                             "run_bench"]},
)
