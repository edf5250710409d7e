"""`python -m control ...`: the `rtai` command group."""

from control.cli import main

main()
