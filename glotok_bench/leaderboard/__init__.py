"""Leaderboards: CSV, markdown and PNG views rebuilt from run records and the paper's numbers.

``tables`` says what each CSV holds, ``extract`` and ``collect`` read the records, ``paper``
reads the published numbers, ``build`` aggregates and writes, ``render`` draws the views,
``cli`` is ``glotok-bench leaderboard regenerate``. Nothing here imports pandas or matplotlib
until a leaderboard is built.
"""
