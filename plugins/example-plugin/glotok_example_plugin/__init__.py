"""Example glotok-bench plugin."""
