"""``python -m hashlab``: the same command line as the ``hashlab`` console script."""

from hashlab.cli import main

if __name__ == "__main__":
    main()
