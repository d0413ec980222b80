"""Train a model: ``python train.py [model=…] [dataset=…] [experiment=…] [key=value …]`` = ``segdeconv train …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("train")
