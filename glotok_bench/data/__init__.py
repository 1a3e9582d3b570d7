"""Image datasets: the ImageNet folder layout, the bundled demo set, and their loaders."""
