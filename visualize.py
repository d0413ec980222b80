"""Zeiler & Fergus projections: ``python visualize.py ckpt_path=PATH [layers=…] [channels=…]`` = ``segdeconv visualize …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("visualize")
