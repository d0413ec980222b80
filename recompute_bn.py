"""Recompute BatchNorm statistics: ``python recompute_bn.py ckpt_path=PATH output=NEW.pt [split=train]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.recompute_bn import recompute_bn

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="recompute_bn")
def main(cfg: DictConfig) -> None:
    run_task(recompute_bn, cfg)


if __name__ == "__main__":
    main()
