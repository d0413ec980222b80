"""Zeiler & Fergus projections: ``python visualize.py ckpt_path=… layers=[conv3_3,conv5_3] channels=[0,1] topk=9``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.visualize import visualize

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    run_task(visualize, cfg)


if __name__ == "__main__":
    main()
