"""`python -m cronflow` = the `cronflow` command."""

from cronflow.cli import main

main()
