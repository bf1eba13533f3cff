"""`python -m zergserve` runs the command line."""

from zergserve.cli import main

raise SystemExit(main())
