"""`python -m fep.cli`: the `fep` command."""

from fep.cli import main

main()
