"""What the test containers run (with the base image's python3, standard library only).

`python3 container_workload.py TRUTH LINES` prints known records on stdout and stderr and
appends each one, as the collector should ship it, to TRUTH (a JSON line: stream, message):
the ground truth the runtime's log files are checked against. LINES numbered lines follow
the special ones, in bursts, so that a small `max-size` rotates the file several times.
"""

from __future__ import annotations

import json
import sys
import time
import traceback

SPECIAL = [
    "plain ascii line",
    "grüße aus Köln, 日本語のログ, emoji 🚀",
    '<a href="/q?x=1&y=2">tags & ampersands</a> <script>alert("x")</script>',
    "tab\tinside and trailing spaces   ",
]
# Over 16 KiB: Docker cuts it into pieces at 16384 bytes. The non-ASCII text sits away from
# the cut points, since a character cut in two there cannot be mended (see the golden files).
LONG = "long-line " + "€uro " * 100 + "0123456789" * 4000 + " end of the long line"


def main() -> None:
    truth_path, lines = sys.argv[1], int(sys.argv[2])
    with open(truth_path, "a", encoding="utf-8") as truth:

        def emit(stream: str, message: str) -> None:
            out = sys.stdout if stream == "stdout" else sys.stderr
            out.write(message + "\n")
            out.flush()
            truth.write(json.dumps({"stream": stream, "message": message}) + "\n")

        for text in SPECIAL:
            emit("stdout", text)
        emit("stdout", LONG)
        emit("stderr", "a warning on stderr <>&")
        try:
            int("not a number")
        except ValueError:
            trace = traceback.format_exc().rstrip("\n")
            sys.stderr.write(trace + "\n")
            sys.stderr.flush()
            truth.write(json.dumps({"stream": "stderr", "message": trace}) + "\n")
        for n in range(lines):
            emit("stdout", f"line {n:06d} " + "payload-" * 12)
            if n % 500 == 499:
                time.sleep(0.2)  # bursts: the collector follows the file across rotations
        emit("stdout", "done")


if __name__ == "__main__":
    main()
