"""protlens: protein language model embeddings you can cluster, evaluate, explain and train."""

from .errors import InputError

__all__ = ["InputError", "__version__"]


def __getattr__(name: str) -> str:
    """``__version__`` on first use: ``importlib.metadata`` costs ~0.1 s of start-up otherwise."""
    if name != "__version__":
        raise AttributeError(f"module 'protlens' has no attribute '{name}'")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("protlens")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+unknown"
