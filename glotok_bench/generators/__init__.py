"""Generators trained on tokenizer outputs: FAR (two codebooks), xAR (continuous features)
and a single-codebook AR baseline, with their presets, training loop and sampling.

Modules, one concept each:

- :mod:`layers`: transformer building blocks shared by every model (RMSNorm, SwiGLU,
  2-D rotary positions, attention with a KV cache, pre-norm / adaLN blocks, class embedding)
- :mod:`decoder`: the LlamaGen-style class-conditional causal decoder used by AR and FAR
- :mod:`ar`, :mod:`far`, :mod:`xar`: the three generators (``Cls(config, **context)``)
- :mod:`options`: :class:`~glotok_bench.generators.options.SamplingOptions`, the one
  object of sampling settings every model's ``sample`` takes (torch-free)
- :mod:`sampling`: logits processing and classifier-free guidance for discrete tokens
- :mod:`flow`: flow-matching path, time sampling and the Euler / Euler-Maruyama samplers
- :mod:`presets`: named sizes (paper's FAR-B/L, xAR-B/H, LlamaGen-B, tiny CPU ones)
- :mod:`tokens`: reader for token directories written by ``tokenize``
- :mod:`checkpoint`: generator checkpoints (atomic save, safe load)
- :mod:`train`: resumable training loop; :mod:`generate`: samples -> images, PNG grid, npz

Nothing is imported here, so ``import glotok_bench.generators`` stays free of torch.
"""
