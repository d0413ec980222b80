"""Check a dataset: ``python check_data.py dataset=camvid dataset.root=… ['splits=[train,val]']``."""
import sys

import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.check_data import check_data

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="check_data")
def main(cfg: DictConfig) -> None:
    sys.exit(1 if run_task(check_data, cfg)["failed"] else 0)


if __name__ == "__main__":
    main()
