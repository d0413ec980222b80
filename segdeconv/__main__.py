"""``python -m segdeconv`` = the ``segdeconv`` command (:mod:`segdeconv.tasks.commands`)."""
from segdeconv.tasks.commands import main

if __name__ == "__main__":
    main()
