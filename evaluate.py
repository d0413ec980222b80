"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=PATH [split=val] [dataset.root=…]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.evaluate import evaluate_checkpoint

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    main()
