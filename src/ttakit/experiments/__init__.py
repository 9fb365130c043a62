"""Reproducible experiments: the founding tutorial and the published ResNets."""
