"""A submitter killed (os._exit, like kill -9: no cleanup) at one point of a submit.

    python crash_submit.py COMP_DIR FILE TEAM POINT
POINT: before_rename (temp file left), after_rename (orphan archive file, no COMMIT),
after_commit (recorded, log line not yet written).
"""

import os
import sys

from leaderboard import Competition, storage

path, file, team, point = sys.argv[1:5]
real_replace, real_sync = os.replace, storage.sync_log


def replace(src, dst, *a, **k):
    if str(src).rsplit("/", 1)[-1].startswith(".incoming."):
        if point == "before_rename":
            os._exit(9)
        real_replace(src, dst, *a, **k)
        if point == "after_rename":
            os._exit(9)
        return None
    return real_replace(src, dst, *a, **k)


def sync(con, directory):
    if point == "after_commit" and con.execute("SELECT COUNT(*) FROM events WHERE action = 'submit'").fetchone()[0]:
        os._exit(9)
    return real_sync(con, directory)


storage.os.replace = replace
storage.sync_log = sync
Competition(path).submit(file, team)
print("not killed")
