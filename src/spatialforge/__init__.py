"""spatialforge: metric 3D spatial reasoning data for vision-language models and robots.

The core (scene types, geometry, QA synthesis, synthetic scenes, dataset I/O, CLI) needs only
numpy, scipy, pillow, pyarrow and tqdm. Model backends live in extras and are imported only when
chosen. Importing this package has no side effects.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
