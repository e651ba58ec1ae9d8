"""The command line with permission bits honoured even for root (see faults.permissions_enforced).

    python ro_cli.py COMP_DIR ARGS...     # runs `python -m leaderboard ARGS...`
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults import permissions_enforced  # noqa: E402

from leaderboard.cli import main  # noqa: E402

with permissions_enforced(Path(sys.argv[1])):
    code = main(sys.argv[2:])
sys.exit(code)
