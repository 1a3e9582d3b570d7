"""Teacher codebooks for histogram relation learning (GloTok Sec. 3.3).

Sources: a released tokenizer's semantic codebook (``fqgan``, ``imagefolder``,
``llamagen``), any tensor in a file (``file``), or k-means of a pretrained encoder's
patch features over a dataset (``dinov2-kmeans``, ``clip-kmeans``). Each is built once
and cached on disk (:mod:`glotok_bench.teachers.cache`).
"""
