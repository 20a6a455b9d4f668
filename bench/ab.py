"""Two Postern binaries side by side, the same sink, alternating load.

    bench/ab.py BIN_A BIN_B [rounds] [sessions] [count]

Starts both (ports 2725 and 2735, relaying to smtp-sink on 2626), warms
them up, then runs `rounds` pairs of relay runs in alternating order and
prints each one's median rate and CPU per message, and the median of the
paired ratios, which is what to read on a noisy machine. EXTRA_A and
EXTRA_B add main.cf lines to either instance. Run as root after
`bench/run.sh` has installed Postfix's tools (smtp-source, smtp-sink).
"""
import json
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
os.makedirs(bench.RUN, exist_ok=True)
if len(sys.argv) < 3:
    raise SystemExit(__doc__)
A, B = sys.argv[1], sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 6
sess = int(sys.argv[4]) if len(sys.argv) > 4 else 10
count = int(sys.argv[5]) if len(sys.argv) > 5 else 3000

class P(bench.Postern):
    def __init__(self, tag, binary, port, extra=""):
        self.bin, self.port = binary, port
        self.dir = os.path.join(bench.RUN, "ab-" + tag)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir); os.chmod(self.dir, 0o755)
        open(os.path.join(self.dir, "main.cf"), "w").write(
            f"data_directory = {self.dir}/data\nmyhostname = postern.bench.example\n"
            f"relayhost = [127.0.0.1]:{bench.SINK_PORT}\nmynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\n"
            f"maillog_file = {self.dir}/maillog\n{extra}")
        open(os.path.join(self.dir, "master.cf"), "w").write(f"127.0.0.1:{port} inet n - n - - smtpd\n")
    def start(self):
        bench.sh(self.bin, "-c", self.dir, "start")
        bench.wait("postern", lambda: bench.port_open(self.port))
    def pids(self):
        r = bench.sh(self.bin, "-c", self.dir, "status", "--json", check=False)
        try:
            return [p["pid"] for p in json.loads(r.stdout)["processes"] if p["pid"]]
        except Exception:
            return []
    def stop(self):
        bench.sh(self.bin, "-c", self.dir, "stop", check=False)

sink = bench.Sink()
ma, mb = P("a", A, 2725, os.environ.get("EXTRA_A", "")), P("b", B, 2735, os.environ.get("EXTRA_B", ""))
res = {"a": [], "b": []}
try:
    ma.start(); mb.start()
    dev = bench.device_of(ma.queue_dir())
    for m in (ma, mb):
        bench.relay_run(m.port, sink, 10, 300, 5120, m.pids, dev)
    for i in range(rounds):
        order = [("a", ma), ("b", mb)] if i % 2 == 0 else [("b", mb), ("a", ma)]
        for tag, m in order:
            r = bench.relay_run(m.port, sink, sess, count, 5120, m.pids, dev)
            res[tag].append((r["rate"], r["cpu_ms_per_msg"], r["flushes_per_msg"]))
finally:
    ma.stop(); mb.stop(); sink.stop()
for tag in "ab":
    v = res[tag]
    print(f"{tag}: rate median {statistics.median(x[0] for x in v):.0f}  cpu median {statistics.median(x[1] for x in v):.3f}  "
          f"flush {statistics.median(x[2] for x in v):.3f}  cpus {[round(x[1],3) for x in v]}")
pr = [a[1] / b[1] for a, b in zip(res["a"], res["b"])]
rr = [b[0] / a[0] for a, b in zip(res["a"], res["b"])]
print(f"cpu a/b per round median {statistics.median(pr):.3f} {[round(x,2) for x in pr]}; rate b/a median {statistics.median(rr):.3f}")
