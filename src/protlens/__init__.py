"""protlens: protein language model embeddings you can cluster, evaluate, explain and train."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("protlens")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

from .errors import InputError

__all__ = ["InputError", "__version__"]
