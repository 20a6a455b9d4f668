"""Idle memory of the whole mail system on the embedded default master.cf.

    bench/idle.py BIN [BIN ...] [--rounds N]

For each binary in turn (they bind the same ports): start it with a
main.cf that sets only its data directory and log file, wait until every
role it starts is up and quiet, then sum PSS (/proc/PID/smaps_rollup) over
every process of the instance, and stop it. Prints the process count and
the median over the rounds of the whole system's PSS, per binary. Run as
root, like the other benchmarks.
"""
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
rounds = 3
if "--rounds" in sys.argv:
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
    args = [a for a in args if a != str(rounds)]
if not args:
    raise SystemExit(__doc__)


def one(binary, tag):
    d = os.path.join(bench.RUN, "idle-" + tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o755)
    open(os.path.join(d, "main.cf"), "w").write(
        f"data_directory = {d}/data\nmaillog_file = {d}/maillog\n")
    bench.sh(binary, "-c", d, "start")
    try:
        bench.wait("postern", lambda: bench.port_open(2525))
        # Let every role finish starting (the broker's spare pool, TLS
        # keys) and the allocator settle.
        time.sleep(5)
        r = bench.sh(binary, "-c", d, "status", "--json")
        pids = [p["pid"] for p in json.loads(r.stdout)["processes"] if p["pid"]]
        return len(pids), bench.pss_kb(pids)
    finally:
        bench.sh(binary, "-c", d, "stop", check=False)
        time.sleep(1)


os.makedirs(bench.RUN, exist_ok=True)
for i, b in enumerate(args):
    res = [one(b, str(i)) for _ in range(rounds)]
    kb = statistics.median(r[1] for r in res)
    print(f"{b}: {res[0][0]} processes, idle PSS median {kb / 1024:.1f} MB "
          f"(rounds: {[round(r[1] / 1024, 1) for r in res]})")
