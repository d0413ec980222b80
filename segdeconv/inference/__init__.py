"""Inference: the :class:`Predictor`, its strategies (TTA, sliding window, dense CRF), and export to
ONNX/TorchScript with parity checks. Plain arguments only — no Hydra here."""
