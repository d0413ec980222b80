"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=PATH [split=val] [dataset.root=…]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import run_task
from segdeconv.evaluation import evaluate_checkpoint


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_task(evaluate_checkpoint, cfg)


if __name__ == "__main__":
    main()
