"""Predict class maps: ``python predict.py ckpt_path=PATH input=DIR_OR_FILE output=DIR [key=value …]`` = ``segdeconv predict …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("predict")
