"""snakeway: a reverse proxy on trio with automatic HTTPS."""

__version__ = "0.1.0"
