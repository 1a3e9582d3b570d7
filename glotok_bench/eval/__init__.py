"""Evaluation: streaming image metrics whose every number carries its protocol.

One concept per module:

- :mod:`.stats` streaming mean/covariance (sufficient statistics, exact merges)
- :mod:`.frechet` the Fréchet distance between two Gaussians
- :mod:`.standin` the deterministic stand-in feature network (no weights file)
- :mod:`.extractors` feature extractors: Inception from a local file, or the stand-in
- :mod:`.inception_score` streaming Inception Score accumulator
- :mod:`.reference` reference statistics: cache keyed by what determines them, ADM files
- :mod:`.batch` what one evaluation step hands every metric (with a per-batch feature memo)
- :mod:`.fidelity` the FID and IS metric plugins
- :mod:`.kid` KID beside FID (keeps both sides' features for paired comparisons)
- :mod:`.per_image` base of the per-image-mean metrics (sum and count state)
- :mod:`.pixel` PSNR / SSIM (per image on uint8, averaged)
- :mod:`.lpips_metric` LPIPS when its weights are on disk
- :mod:`.usage` codebook usage and perplexity
- :mod:`.uniformity` density CV / normalised entropy / Gini of latents (paper Table 3)
- :mod:`.image_grid` PNG grids; :mod:`.fig4` the paper's Fig. 4 retention grid
- :mod:`.evaluator` streaming evaluation of a tokenizer over a DataLoader

Nothing here imports torch-fidelity, scikit-learn or scipy at module import time.
"""
