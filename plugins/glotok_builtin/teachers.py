"""Built-in teacher codebook sources for histogram relation learning."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component

_T = "glotok_bench.teachers"


@hookimpl
def glotok_teachers() -> list[Component]:
    return [
        Component("dinov2-kmeans", f"{_T}.feature_kmeans:DinoV2KMeansTeacher",
                  "k-means of DINOv2 patch features over an image folder (local weights)"),
        Component("clip-kmeans", f"{_T}.feature_kmeans:ClipKMeansTeacher",
                  "k-means of CLIP patch features (VQGAN-LC's source; local weights)"),
        Component("llamagen", f"{_T}.codebook_file:LlamaGenTeacher", "LlamaGen VQ checkpoint codebook"),
        Component("fqgan", f"{_T}.codebook_file:FQGANTeacher", "FQGAN semantic codebook"),
        Component("imagefolder", f"{_T}.codebook_file:ImageFolderTeacher", "ImageFolder semantic codebook"),
        Component("patch-kmeans", f"{_T}.patch_kmeans:PatchKMeansTeacher",
                  "k-means of raw pixel patches: no weights needed, not semantic (demo/CPU grids)"),
        Component("file", f"{_T}.codebook_file:FileTeacher", "any tensor in a .safetensors/.pt file, by key"),
    ]
