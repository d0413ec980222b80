"""Train a model: ``python train.py [model=…] [dataset=…] [experiment=…] [key=value …]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import run_task
from segdeconv.training import fit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_task(fit, cfg)


if __name__ == "__main__":
    main()
