"""Predict class maps: ``python predict.py ckpt_path=PATH input=DIR_OR_FILE output=DIR [key=value …]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.predict import predict_files

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_task(predict_files, cfg)


if __name__ == "__main__":
    main()
