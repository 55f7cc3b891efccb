"""``python -m tunhelper`` runs the command line."""

from tunhelper.cli import main

raise SystemExit(main())
