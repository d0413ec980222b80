"""Export a checkpoint: ``python export.py ckpt_path=PATH [format=onnx|torchscript] [output=…]`` = ``segdeconv export …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("export")
