"""``python -m sabot`` runs the command line."""
from .cli import main

main()
