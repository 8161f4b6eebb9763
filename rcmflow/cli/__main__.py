"""`python -m rcmflow.cli.main`: the `rcmflow` command."""

from rcmflow.cli.main import main

main()
