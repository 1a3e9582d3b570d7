"""Built-in metrics: FID/IS (Inception from a local file, or a named stand-in), pixel
metrics, LPIPS, codebook usage and latent uniformity."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_metrics() -> list[Component]:
    return [
        Component("fid", "glotok_bench.eval.fidelity:FrechetDistance",
                  "rFID/gFID from streamed features; cached or external reference statistics"),
        Component("inception-score", "glotok_bench.eval.fidelity:InceptionScore", "Inception Score"),
        Component("kid", "glotok_bench.eval.kid:KernelDistance", "KID (unbiased polynomial MMD, torch-fidelity's definition)"),
        Component("psnr", "glotok_bench.eval.pixel:PSNR", "per-image PSNR on uint8, averaged"),
        Component("ssim", "glotok_bench.eval.pixel:SSIM", "SSIM, data range 255 (scikit-image definition)"),
        Component("lpips", "glotok_bench.eval.lpips_metric:LPIPSMetric", "LPIPS (VGG), local weights"),
        Component("codebook-usage", "glotok_bench.eval.usage:CodebookUsage",
                  "fraction of codes used and perplexity, per codebook"),
        Component("uniformity", "glotok_bench.eval.uniformity:LatentUniformity",
                  "density CV, normalised entropy, Gini of semantic latents (t-SNE + KDE)"),
    ]
