"""Histogram relation learning (GloTok Sec. 3.3): the relation histogram and L_hist.

Public entry points live in :mod:`glotok_bench.histogram.api` and are re-exported from
the package top level as ``glotok_bench.relation_histogram`` and
``glotok_bench.histogram_relation_loss``.
"""
