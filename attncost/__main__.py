"""`python -m attncost`: the same command line as `attncost`."""
from .cli import run

if __name__ == "__main__":  # pragma: no cover
    run()
