"""Run a script as ``__main__`` and record the process's peak resident memory (a child's memory is measured in the
child, never by the test's own process):

    python tests/helpers/peak_rss.py OUT.json scripts/predict.py ARGS...

writes ``{"exit": status, "peak_rss_mb": ...}`` to OUT.json and exits with the script's status.

The peak is the kernel's VmHWM, this process's own high-water mark. ``ru_maxrss`` is not: Linux carries it over
``exec`` from the process that forked the child, so a child of a test run that once held 2 GB reports 2 GB."""
import json
import os
import resource
import runpy
import sys


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB since it started (VmHWM from /proc; ru_maxrss where there is none)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    out, script, *args = sys.argv[1:]
    sys.argv = [script] + args
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts its folder first
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        with open(out, "w") as f:
            json.dump({"exit": code, "peak_rss_mb": peak_rss_mb()}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
