"""segdeconv: DeconvNet / SegNet semantic segmentation with max-pool switches, in PyTorch."""
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Predictor":  # lazy: importing the package must stay cheap
        from segdeconv.inference import Predictor

        return Predictor
    raise AttributeError(name)
