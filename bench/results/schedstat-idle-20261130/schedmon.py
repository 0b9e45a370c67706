"""Sample /proc/<pid>/schedstat of every process matching a pattern, every 0.25 s.

usage: python schedmon.py OUT SECONDS PATTERN   (started beside a benchmark run)
Each line: time pid run_ns runqueue_wait_ns timeslices state.
"""

import subprocess
import sys
import time


def pids(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def main() -> None:
    path, seconds, pattern = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    end = time.time() + seconds
    with open(path, "w") as out:
        while time.time() < end:
            for pid in pids(pattern):
                try:
                    with open(f"/proc/{pid}/schedstat") as f:
                        sched = f.read().split()
                    with open(f"/proc/{pid}/stat") as f:
                        state = f.read().split(") ")[1].split()[0]
                except OSError:
                    continue
                out.write(f"{time.time():.3f} {pid} {sched[0]} {sched[1]} {sched[2]} {state}\n")
            out.flush()
            time.sleep(0.25)


if __name__ == "__main__":
    main()
