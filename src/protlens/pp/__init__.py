"""Preprocessing: turning sequences into embeddings."""

from ._embed import EmbedResult, embed, embed_sequences, plan_batches
from ._windows import WINDOW_RULE, window_spans

__all__ = ["WINDOW_RULE", "EmbedResult", "embed", "embed_sequences", "plan_batches", "window_spans"]

from ._ray import embed_ray  # noqa: E402  (imports Ray only when called)

__all__ += ["embed_ray"]
