"""Training loop, EMA, metric logs and resumable state for the tokenizer.

Import :func:`glotok_bench.train.trainer.train` for the loop; this ``__init__`` stays
torch-free so that configs can be imported cheaply.
"""
