"""segdeconv: DeconvNet / SegNet semantic segmentation with max-pool switches, in PyTorch.

Public API: :class:`Predictor` (images → class maps) and :func:`load_trained` (a checkpoint → the
model plus everything needed to use it); both are imported lazily so ``import segdeconv`` stays cheap.
"""
import os

# albumentations otherwise asks PyPI for a newer version on import (a 2 s timeout offline); set
# here, once, because datasets, presets and Hydra-instantiated pipelines all import it.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
__all__ = ["Predictor", "Trained", "load_trained", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from segdeconv.inference.predictor import Predictor

        return Predictor
    if name in ("load_trained", "Trained"):
        from segdeconv import trained

        return getattr(trained, name)
    raise AttributeError(name)
