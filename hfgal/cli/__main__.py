"""`python -m hfgal.cli ...` runs the `hfgal` command line."""

from . import main

main()
