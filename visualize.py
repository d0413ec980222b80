"""Zeiler & Fergus projections: ``python visualize.py ckpt_path=… layers=[conv3_3,conv5_3] channels=[0,1] topk=9``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import run_task
from segdeconv.visualize.run import visualize


@hydra.main(version_base="1.3", config_path="conf", config_name="visualize")
def main(cfg: DictConfig) -> None:
    run_task(visualize, cfg)


if __name__ == "__main__":
    main()
