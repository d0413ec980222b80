"""The task layer: one module per command (train, evaluate, predict, export, visualize, check_data).
These are the only modules that read a Hydra ``DictConfig``; each resolves it once into plain objects
and exposes one function ``task(cfg)`` that the root scripts and the ``segdeconv`` command run."""
