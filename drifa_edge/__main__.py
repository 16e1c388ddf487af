"""``python -m drifa_edge`` runs the command line (the same as the ``drifa-edge`` script)."""

from drifa_edge.cli import main

main()
