"""Preprocessing: turning sequences into embeddings."""

from ._embed import EmbedResult, embed, embed_sequences, plan_batches, window_spans

__all__ = ["EmbedResult", "embed", "embed_sequences", "plan_batches", "window_spans"]
