"""``python -m scr`` runs the CLI."""

from scr.cli import main

main()
