"""Evaluate a checkpoint: ``python evaluate.py ckpt_path=PATH [dataset.root=…] [split=val]`` = ``segdeconv evaluate …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("evaluate")
