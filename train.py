"""Train a model: ``python train.py [model=…] [dataset=…] [experiment=…] [key=value …]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.commands import sweep_metric
from segdeconv.tasks.train import fit

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return sweep_metric(run_task(fit, cfg))  # val mIoU: what a sweep (-m hydra/sweeper=optuna) optimizes


if __name__ == "__main__":
    main()
