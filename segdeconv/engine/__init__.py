"""The training engine: step, evaluation loop, trainer, metrics, checkpoint files and resume, runtime
(device/precision), distributed set-up, RNG state, loggers. Plain arguments only — no Hydra here."""
