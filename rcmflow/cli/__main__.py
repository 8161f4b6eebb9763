"""`python -m rcmflow.cli`: the `rcmflow` command."""

from rcmflow.cli.main import main

main()
