"""Preprocessing: turning sequences into embeddings.

Names load on first use (``lazy_loader``): the CLI starts without torch; ``embed_ray`` imports
Ray only when called.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={"_embed": ["EmbedResult", "embed", "embed_sequences", "plan_batches"],
                  "_windows": ["WINDOW_RULE", "window_spans"],
                  "_ray": ["embed_ray"]},
)
