"""Check a dataset: ``python check_data.py dataset=camvid dataset.root=… ['splits=[train,val]']`` = ``segdeconv check …``."""
from segdeconv.tasks.commands import script

if __name__ == "__main__":
    script("check")
