"""Semantic supervision of a tokenizer's semantic branch (component kind ``semantic_supervision``).

``histogram``: GloTok's global histogram relation loss against a teacher codebook.
``local-infonce``: FQGAN-style local supervision by a frozen encoder run on every batch.
``none``: no semantic loss. Each returns the unweighted loss; the trainer applies lambda.
"""
