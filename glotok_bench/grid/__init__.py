"""Grids: a base config crossed with axes, each cell run as a pipeline of steps."""
