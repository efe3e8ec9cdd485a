"""Allows `python -m cityseg`, for environments where the console script is not on PATH."""

from cityseg.cli import main

if __name__ == "__main__":
    main()
