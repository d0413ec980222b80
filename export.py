"""Export a checkpoint: ``python export.py ckpt_path=PATH format=onnx|torchscript [output=FILE]``."""
import hydra
from omegaconf import DictConfig

from segdeconv.cli import prepare_hydra, run_task
from segdeconv.tasks.export import export_checkpoint

prepare_hydra()  # resolvers + one-line Hydra errors, see segdeconv/cli.py


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_task(export_checkpoint, cfg)


if __name__ == "__main__":
    main()
