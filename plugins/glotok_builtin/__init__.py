"""The built-in glotok-bench plugins: one small module per component kind.

Each module registers through the ``glotok_bench`` entry-point group in pyproject.toml,
exactly as a third-party plugin would. The implementations live in ``glotok_bench``.
"""
