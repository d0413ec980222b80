"""Recompute BatchNorm statistics: ``python recompute_bn.py ckpt_path=PATH output=NEW.pt [split=train]`` = ``segdeconv recompute_bn …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("recompute_bn")
