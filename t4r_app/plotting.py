"""Matplotlib for files, never for a screen: every plot of the product is written as a PNG."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported on first use (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")  # headless machines, CI and workers have no display
    import matplotlib.pyplot as plt

    return plt
