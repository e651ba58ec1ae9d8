"""`python -m tmr_lib ...` is the same as the `tmr` command."""
from .cli import main

raise SystemExit(main())
