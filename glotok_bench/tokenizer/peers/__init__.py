"""Released peer tokenizers (LlamaGen, FQGAN) as glotok-bench tokenizers.

A peer checkpoint is read without running code (``safe_load``), its architecture is read
from the tensor shapes (and the saved ``args`` where shapes are silent), and its weights
are mapped one to one onto a :class:`~glotok_bench.tokenizer.model.Tokenizer` built from
our own components, so every command and metric treats it exactly as one of ours.
Formats are components of kind ``tokenizer_format`` (hook ``glotok_tokenizer_formats``);
the built-in ones are registered by ``glotok_builtin.tokenizer_formats``.
"""
