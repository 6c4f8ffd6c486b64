"""`python -m attncost`: the same command line as `attncost`."""
from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main(prog_name="attncost")
