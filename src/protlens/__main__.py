"""``python -m protlens``."""

from .cli import main

main()
