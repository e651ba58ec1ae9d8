"""One racing submitter: wait until a shared start time, then submit (prints a JSON line)."""

import json
import sys
import time

from leaderboard import Competition, LeaderboardError

path, file, team, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
comp = Competition(path)
comp.scorer()  # load the answers before the start line
late = time.time() > start
while time.time() < start:
    time.sleep(0.001)
try:
    res = comp.submit(file, team, via="race")
    print(json.dumps({"accepted": True, "id": res.submission_id, "started_late": late}))
except LeaderboardError as exc:
    print(json.dumps({"accepted": False, "error": str(exc), "started_late": late}))
