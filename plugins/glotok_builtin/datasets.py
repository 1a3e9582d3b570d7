"""Built-in datasets: any ImageNet-layout folder, and the bundled demo photos."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_datasets() -> list[Component]:
    return [
        Component("imagefolder", "glotok_bench.data.imagefolder:ImageFolderDataset",
                  "ImageNet layout root/<split>/<class>/<image>, ADM centre crop"),
        Component("demo", "glotok_bench.data.demo:DemoDataset",
                  "bundled demo photos at 32/64 px (not ImageNet; smoke tests only)"),
    ]
