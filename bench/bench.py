#!/usr/bin/python3
"""Postern benchmarks, side by side with Postfix on the same machine.

    bench/bench.py throughput   relay 5 KB messages smtp-source -> MTA -> smtp-sink
    bench/bench.py memory       proportional memory (PSS) per idle SMTP session
    bench/bench.py accept       Postern's acceptance rate by size and concurrency
    bench/bench.py tls          TLS handshakes/s on port 465: keys in the broker vs in smtpd
    bench/bench.py postscreen   memory per client in postscreen's greeting wait, and
                                connections screened per second (bots, known clients)
    bench/bench.py backlog      a backlog built with the next hop down (--count messages of
                                --size bytes, both MTAs under a 1024-descriptor limit):
                                memory while it sits, time to first delivery and to drain

Run through bench/run.sh, which installs Debian's postfix (for Postfix
itself and for smtp-source/smtp-sink) and builds Postern in release mode.
Everything listens on 127.0.0.1; every loop is bounded in count and time.
Results are printed as Markdown tables and saved under bench/results/.
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# POSTERN_BIN: another Postern binary to measure (bench/README: ring against aws-lc-rs).
POSTERN = os.environ.get("POSTERN_BIN", os.path.join(ROOT, "target/release/postern"))
RUN = os.path.join(ROOT, "bench/run")
RESULTS = os.path.join(ROOT, "bench/results")
SINK_PORT, POSTERN_PORT, POSTFIX_PORT = 2626, 2725, 2625
HZ = os.sysconf("SC_CLK_TCK")


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def wait(what, cond, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# ---- measurements -------------------------------------------------------

def cpu_seconds(pids):
    """utime+stime of the processes, plus what their reaped children used."""
    total = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / HZ


def descendants(pid):
    out, todo = [pid], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except FileNotFoundError:
            continue
        for k in map(int, kids):
            out.append(k)
            todo.append(k)
    return out


def pss_kb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return total


def device_of(path):
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in open("/proc/diskstats"):
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return f[2]
    return None


def flushes(dev):
    """Completed cache-flush requests of the block device (every fsync or
    syncfs that reaches the disk shows up here), for any MTA alike."""
    for line in open("/proc/diskstats"):
        f = line.split()
        if f[2] == dev and len(f) >= 20:
            return int(f[18])
    # Partitions report no flushes; fall back to the whole disk.
    base = dev.rstrip("0123456789")
    for line in open("/proc/diskstats"):
        f = line.split()
        if f[2] == base and len(f) >= 20:
            return int(f[18])
    return 0


def fsync_rate(directory, seconds=2.0):
    """This disk's rate of write+fsync commits, one writer."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    n, end = 0, time.time() + seconds
    while time.time() < end:
        os.pwrite(fd, b"x" * 4096, (n % 64) * 4096)
        os.fsync(fd)
        n += 1
    os.close(fd)
    os.unlink(path)
    return n / seconds


# ---- the sink and the load ----------------------------------------------

class Sink:
    def __init__(self):
        self.out = tempfile.NamedTemporaryFile(prefix="sink-", suffix=".out", delete=False)
        self.p = subprocess.Popen(["smtp-sink", "-c", "-u", "postfix", f"127.0.0.1:{SINK_PORT}", "1000"],
                                  stdout=self.out, stderr=subprocess.STDOUT)
        wait("smtp-sink", lambda: port_open(SINK_PORT))

    def count(self):
        data = open(self.out.name, "rb").read().replace(b"\r", b"\n")
        n = 0
        for tok in data.split():
            if tok.startswith(b"mesg="):
                try:
                    n = int(tok[5:])
                except ValueError:
                    pass
        return n

    def stop(self):
        self.p.terminate()
        self.p.wait()
        os.unlink(self.out.name)


def relay_run(port, sink, sessions, count, size, pids_fn, dev, msg_file=None):
    """smtp-source -> MTA -> sink; end to end time until the sink has them.
    With msg_file, every message is that file (smtp-source -F)."""
    before_n = sink.count()
    cpu0, fl0 = cpu_seconds(pids_fn()), flushes(dev)
    t0 = time.time()
    body = ["-F", msg_file] if msg_file else ["-l", str(size)]
    sh("smtp-source", "-s", str(sessions), *body, "-m", str(count), "-f", "bench@source.example",
       "-t", "rcpt@sink.example", f"127.0.0.1:{port}")
    t_accept = time.time() - t0
    wait("all messages at the sink", lambda: sink.count() - before_n >= count, timeout=600)
    elapsed = time.time() - t0
    cpu1, fl1 = cpu_seconds(pids_fn()), flushes(dev)
    return {
        "sessions": sessions, "count": count, "size": size,
        "accept_rate": count / t_accept, "rate": count / elapsed,
        "cpu_ms_per_msg": 1000 * (cpu1 - cpu0) / count,
        "flushes_per_msg": (fl1 - fl0) / count,
    }


# ---- Postern --------------------------------------------------------------

class Postern:
    name = "Postern"
    port = POSTERN_PORT

    def __init__(self, extra="", master_extra="", maxproc="-", command="smtpd"):
        self.dir = os.path.join(RUN, "postern")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o755)
        open(os.path.join(self.dir, "main.cf"), "w").write(
            f"data_directory = {self.dir}/data\nmyhostname = postern.bench.example\n"
            f"relayhost = [127.0.0.1]:{SINK_PORT}\nmynetworks = 127.0.0.0/8\nsmtpd_peername_lookup = no\n"
            f"maillog_file = {self.dir}/maillog\n{extra}")
        open(os.path.join(self.dir, "master.cf"), "w").write(
            f"127.0.0.1:{POSTERN_PORT} inet n - n - {maxproc} {command}\n{master_extra}")

    def start(self, nofile=None):
        pre = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
        sh(*pre, POSTERN, "-c", self.dir, "start")
        wait("postern", lambda: port_open(POSTERN_PORT))

    def flush(self):
        sh(POSTERN, "-c", self.dir, "queue", "flush")

    def role_pids(self):
        r = json.loads(sh(POSTERN, "-c", self.dir, "status", "--json").stdout)
        return {p["role"]: p["pid"] for p in r["processes"] if p["pid"]}

    def pids(self):
        r = sh(POSTERN, "-c", self.dir, "status", "--json", check=False)
        try:
            return [p["pid"] for p in json.loads(r.stdout)["processes"] if p["pid"]]
        except (json.JSONDecodeError, KeyError):
            return []

    def smtpd_pids(self):
        r = json.loads(sh(POSTERN, "-c", self.dir, "status", "--json").stdout)
        return [p["pid"] for p in r["processes"] if p["role"] == "smtpd"]

    def queue_dir(self):
        return os.path.join(self.dir, "data")

    def stop(self):
        sh(POSTERN, "-c", self.dir, "stop", check=False)


# ---- Postfix --------------------------------------------------------------

class Postfix:
    name = "Postfix"
    port = POSTFIX_PORT

    def __init__(self, process_limit=100, main_extra="", master_extra="", command="smtpd", maxproc="-"):
        self.dir = os.path.join(RUN, "postfix")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.etc = os.path.join(self.dir, "etc")
        self.spool = os.path.join(self.dir, "spool")
        for d in (self.etc, self.spool, os.path.join(self.dir, "data")):
            os.makedirs(d)
        os.chmod(self.dir, 0o755)
        shutil.chown(os.path.join(self.dir, "data"), "postfix", "postfix")
        open(os.path.join(self.etc, "main.cf"), "w").write(f"""\
compatibility_level = 3.6
queue_directory = {self.spool}
data_directory = {self.dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relayhost = [127.0.0.1]:{SINK_PORT}
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
alias_maps =
local_recipient_maps =
default_process_limit = {process_limit}
maillog_file = {self.dir}/maillog
maillog_file_prefixes = {self.dir}
{main_extra}
""")
        master = open("/usr/share/postfix/master.cf.dist").read()
        lines = []
        for line in master.splitlines():
            if line.startswith("smtp      inet"):
                line = f"127.0.0.1:{POSTFIX_PORT} inet n - n - {maxproc} {command}"
            lines.append(line)
        lines.append("postlog   unix-dgram n  -       n       -       1       postlogd")
        lines.append(master_extra)
        open(os.path.join(self.etc, "master.cf"), "w").write("\n".join(lines) + "\n")
        self.devlog = None
        if not os.path.exists("/dev/log"):
            # Postfix commands log before postlogd runs; with no syslog
            # daemon they fail silently. Catch their lines on /dev/log.
            self.devlog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.devlog.bind("/dev/log")
            # Read them, or a sender blocks once the socket's queue (ten
            # datagrams) is full.
            threading.Thread(target=self._drain, args=(self.devlog,), daemon=True).start()

    @staticmethod
    def _drain(sock):
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def start(self, nofile=None):
        pre = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
        sh(*pre, "postfix", "-c", self.etc, "start")
        wait("postfix", lambda: port_open(POSTFIX_PORT))

    def flush(self):
        sh("postqueue", "-c", self.etc, "-f")

    def role_pids(self):
        out = {}
        for p in self.pids():
            try:
                name = open(f"/proc/{p}/comm").read().strip()
            except FileNotFoundError:
                continue
            out[name if name not in out else f"{name}.{p}"] = p
        return out

    def master_pid(self):
        return int(open(os.path.join(self.spool, "pid/master.pid")).read().split()[0])

    def pids(self):
        try:
            return descendants(self.master_pid())
        except FileNotFoundError:
            return []

    def smtpd_pids(self):
        out = []
        for p in self.pids():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "smtpd":
                    out.append(p)
            except FileNotFoundError:
                pass
        return out

    def queue_dir(self):
        return self.spool

    def stop(self):
        sh("postfix", "-c", self.etc, "stop", check=False)
        time.sleep(1)
        if self.devlog:
            self.devlog.close()
            os.unlink("/dev/log")


# ---- the benchmarks ------------------------------------------------------

def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def throughput(args):
    sink = Sink()
    results = {}
    disk_rate = None
    try:
        for mta in (Postern(), Postfix(process_limit=150)):
            mta.start()
            try:
                dev = device_of(mta.queue_dir())
                if disk_rate is None:
                    disk_rate = fsync_rate(mta.queue_dir())
                # Warm up: the first messages pay for process start-up.
                relay_run(mta.port, sink, 10, 200, args.size, mta.pids, dev)
                for s in args.sessions:
                    results[(mta.name, s)] = relay_run(mta.port, sink, s, args.count, args.size, mta.pids, dev)
            finally:
                mta.stop()
    finally:
        sink.stop()
    rows = []
    for s in args.sessions:
        pe, pf = results[("Postern", s)], results[("Postfix", s)]
        rows.append([s, f"{pe['rate']:.0f}", f"{pf['rate']:.0f}", f"{pe['rate'] / pf['rate']:.2f}x",
                     f"{pe['cpu_ms_per_msg']:.2f}", f"{pf['cpu_ms_per_msg']:.2f}",
                     f"{pe['flushes_per_msg']:.3f}", f"{pf['flushes_per_msg']:.3f}"])
    text = (f"Relaying {args.count} messages of {args.size} bytes per run, smtp-source -> MTA -> smtp-sink, "
            f"fsync on. This disk: {disk_rate:.0f} write+fsync commits/s (one writer).\n\n" +
            table(["sessions", "Postern msg/s", "Postfix msg/s", "ratio", "Postern CPU ms/msg",
                   "Postfix CPU ms/msg", "Postern flushes/msg", "Postfix flushes/msg"], rows))
    return text, {"disk_fsync_per_s": disk_rate, "runs": {f"{k[0]} {k[1]}": v for k, v in results.items()}}


def hold_idle(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.recv(4096)
        s.sendall(b"EHLO idle.example\r\n")
        s.recv(4096)
        socks.append(s)
    return socks


def memory(args):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows, raw = [], {}
    # maxproc (Postfix: the process limit) above the sessions held.
    for mta, counts in ((Postern(maxproc="1100"), (200, 1000)), (Postfix(process_limit=260), (200,))):
        mta.start()
        try:
            time.sleep(1)
            for n in counts:
                base = pss_kb(mta.pids())
                socks = hold_idle(mta.port, n)
                time.sleep(2)
                held = pss_kb(mta.pids())
                per = (held - base) / n
                rows.append([mta.name, n, f"{per:.1f}", f"{held / 1024:.1f}"])
                raw[f"{mta.name} {n}"] = {"base_kb": base, "held_kb": held, "per_session_kb": per}
                for s in socks:
                    s.close()
                time.sleep(1)
        finally:
            mta.stop()
    pe = raw["Postern 200"]["per_session_kb"]
    pf = raw["Postfix 200"]["per_session_kb"]
    text = (table(["MTA", "idle sessions", "PSS per session (KiB)", "total PSS (MiB)"], rows) +
            f"\n\nPostern uses {pf / max(pe, 0.001):.0f}x less memory per idle session than Postfix "
            f"({pe:.1f} KiB against {pf:.1f} KiB).")
    return text, raw


def accept(args):
    sink = Sink()
    rows, raw = [], {}
    try:
        mta = Postern()
        mta.start()
        try:
            dev = device_of(mta.queue_dir())
            relay_run(mta.port, sink, 10, 200, 5120, mta.pids, dev)
            for size in (1024, 5120, 102400):
                row = [f"{size // 1024} KB"]
                for s in (1, 10, 50):
                    count = 500 if size < 102400 else 200
                    r = relay_run(mta.port, sink, s, count, size, mta.pids, dev)
                    raw[f"{size} {s}"] = r
                    row.append(f"{r['accept_rate']:.0f}")
                rows.append(row)
        finally:
            mta.stop()
    finally:
        sink.stop()
    text = ("Messages accepted per second (250 after the fsync that covers them) by Postern, "
            "with delivery to smtp-sink running at the same time.\n\n" +
            table(["size", "1 client", "10 clients", "50 clients"], rows))
    return text, raw


# ---- TLS handshakes ---------------------------------------------------------

TLS_POSTERN, TLS_POSTFIX = 2765, 2665


def make_cert(directory, kind):
    key, cert = os.path.join(directory, f"{kind}-key.pem"), os.path.join(directory, f"{kind}-cert.pem")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa" else ["-newkey", "rsa:2048"]
    sh("openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert,
       "-subj", "/CN=bench.example", "-days", "30")
    os.chmod(key, 0o600)
    return key, cert


def handshakes(port, seconds, clients):
    """Full handshakes (no resumption) from `clients` openssl s_time processes."""
    procs = [subprocess.Popen(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new",
                               "-time", str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(clients)]
    total = 0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        for line in out.splitlines():
            parts = line.split()
            if "connections in" in line and "real seconds" in line:
                total += int(parts[0])
    return total


def role_cpu(mta, role):
    r = json.loads(sh(POSTERN, "-c", mta.dir, "status", "--json").stdout)
    return cpu_seconds([p["pid"] for p in r["processes"] if p["role"] == role and p["pid"]])


def tls(args):
    seconds, clients, runs = 8, 2, 3
    keydir = os.path.join(RUN, "tls")
    shutil.rmtree(keydir, ignore_errors=True)
    os.makedirs(keydir)
    os.chmod(keydir, 0o755)
    rows, raw = [], {}
    for kind in ("ecdsa", "rsa"):
        key, cert = make_cert(keydir, kind)
        postern = Postern(f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n",
                          f"127.0.0.1:{TLS_POSTERN} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n")
        postfix = Postfix(process_limit=150,
                          main_extra=f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n",
                          master_extra=f"127.0.0.1:{TLS_POSTFIX} inet n - n - - smtpd "
                                       "-o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt")
        for mta, port in ((postern, TLS_POSTERN), (postfix, TLS_POSTFIX)):
            mta.start()
            try:
                wait("TLS port", lambda: port_open(port))
                handshakes(port, 2, 1)  # warm up
                results = []
                for _ in range(runs):
                    cpu0 = cpu_seconds(mta.pids())
                    split0 = (role_cpu(mta, "smtpd"), role_cpu(mta, "broker")) if mta is postern else None
                    n = handshakes(port, seconds, clients)
                    cpu1 = cpu_seconds(mta.pids())
                    r = {"rate": n / seconds, "cpu_ms": 1000 * (cpu1 - cpu0) / max(n, 1)}
                    if split0:
                        r["smtpd_ms"] = 1000 * (role_cpu(mta, "smtpd") - split0[0]) / max(n, 1)
                        r["broker_ms"] = 1000 * (role_cpu(mta, "broker") - split0[1]) / max(n, 1)
                    results.append(r)
                results.sort(key=lambda r: r["rate"])
                raw[f"{mta.name} {kind}"] = results
            finally:
                mta.stop()
        pe, pf = raw[f"Postern {kind}"][runs // 2], raw[f"Postfix {kind}"][runs // 2]
        rows.append([kind, f"{pe['rate']:.0f}", f"{pf['rate']:.0f}", f"{pe['rate'] / pf['rate']:.2f}x",
                     f"{pe['cpu_ms']:.2f}", f"{pe['smtpd_ms']:.2f}", f"{pe['broker_ms']:.2f}", f"{pf['cpu_ms']:.2f}"])
    text = (f"Full TLS handshakes per second on an implicit-TLS port, {clients} `openssl s_time -new` clients, "
            f"{seconds} s per run, median of {runs} runs. Postern signs in the broker (one IPC round trip per "
            "handshake, plus one for the TLS 1.3 session ticket); Postfix signs inside each smtpd.\n\n" +
            table(["key", "Postern hs/s", "Postfix hs/s", "ratio", "Postern CPU ms/hs", "of which smtpd",
                   "of which broker", "Postfix CPU ms/hs"], rows))
    return text, raw


def rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def backlog(args):
    """The next hop is down while --count messages are accepted; then the
    MTA is restarted, the next hop comes back and the queue is flushed.
    Both MTAs run under the same 1024-descriptor limit. Reports memory per
    process while the backlog sits (RSS, and the growth over the idle
    instance per queued message), and the time from the start command to
    the first delivery, and to the last."""
    n, size = args.count, args.size
    quiet = ("minimal_backoff_time = 3600s\nmaximal_backoff_time = 4000s\n"
             "smtp_connect_timeout = 2s\n")
    rows, raw = [], {}
    for mta in (Postern(extra=quiet), Postfix(main_extra=quiet)):
        mta.start(nofile=1024)
        try:
            time.sleep(2)
            idle = {r: rss_kb(p) for r, p in mta.role_pids().items()}
            t0 = time.time()
            sh("smtp-source", "-s", "10", "-l", str(size), "-m", str(n), "-f", "bench@source.example",
               "-t", "rcpt@sink.example", f"127.0.0.1:{mta.port}")
            accept_s = time.time() - t0
            # Let every first attempt fail and the queue settle.
            time.sleep(max(15, n / 5000))
            sitting = {r: rss_kb(p) for r, p in mta.role_pids().items()}
            # The next hop comes back while the MTA restarts (an upgrade, a
            # crash): from the start command to the first delivery, then
            # to the last.
            mta.stop()
            sink = Sink()
            try:
                t1 = time.time()
                mta.start(nofile=1024)
                mta.flush()
                wait("first delivery", lambda: sink.count() >= 1, timeout=600)
                first_s = time.time() - t1
                wait("the whole backlog", lambda: sink.count() >= n, timeout=7200)
                drain_s = time.time() - t1
            finally:
                sink.stop()
            raw[mta.name] = {"accept_s": accept_s, "first_s": first_s, "drain_s": drain_s,
                             "idle_rss_kb": idle, "sitting_rss_kb": sitting}
            per = {r: (sitting.get(r, 0) - idle.get(r, 0)) * 1024 / n for r in sitting}
            big = sorted(sitting, key=lambda r: -sitting[r])[:4]
            rows.append([mta.name, f"{n / accept_s:.0f}",
                         ", ".join(f"{r} {sitting[r] / 1024:.1f} MiB" for r in big),
                         f"{sum(sitting.values()) / 1024:.1f} MiB",
                         ", ".join(f"{r} {per[r]:.0f}" for r in big),
                         f"{first_s:.2f}", f"{drain_s:.1f}", f"{n / drain_s:.0f}"])
        finally:
            mta.stop()
            # The next MTA starts with an empty disk.
            shutil.rmtree(mta.queue_dir(), ignore_errors=True)
    text = (f"A backlog of {n} messages of {size} bytes, built by 10 smtp-source sessions with the "
            f"next hop down, both MTAs under prlimit --nofile=1024:1024; then the MTA is restarted, "
            f"smtp-sink starts and the queue is flushed; times count from the start command.\n\n" +
            table(["MTA", "accepted msg/s", "largest RSS while it sits", "total RSS",
                   "bytes/queued msg (RSS growth)", "first delivery s", "last delivery s", "drain msg/s"], rows))
    return text, raw


SCREEN_DNS = "127.0.0.1"


def screening(args):
    """A typical edge-relay restriction set, the same for both MTAs: the
    client is outside mynetworks, so every message passes
    permit_mynetworks, reject_unauth_destination, two DNS lists (not
    listed: NXDOMAIN from a local dnsmasq, which Postern's resolver then
    answers from its cache and Postfix asks each time, as it has none), a
    check_sender_access hash table, and header_checks with 100 regexp
    patterns. Postfix reads /etc/resolv.conf, so it points at the local
    dnsmasq for the run and is restored after."""
    d = os.path.join(RUN, "screening")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o755)
    senders = os.path.join(d, "senders")
    with open(senders, "w") as f:
        for i in range(200):
            f.write(f"spammer{i}.example REJECT\n")
    hc = os.path.join(d, "header_checks")
    with open(hc, "w") as f:
        for i in range(100):
            f.write(f"/^Subject: .*(lottery|prize|winner){i}[a-z]+/ REJECT\n")
    os.chmod(senders, 0o644)
    os.chmod(hc, 0o644)
    rules = ("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, "
             "reject_rbl_client zen.test, reject_rbl_client bl.test, check_sender_access hash:" + senders + "\n"
             "mynetworks = 192.0.2.0/24\nrelay_domains = sink.example\n"
             "header_checks = regexp:" + hc + "\n")
    dns = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                            f"--listen-address={SCREEN_DNS}", "--bind-interfaces", "--port=53",
                            "--local=/test/", "--cache-size=1000", "--user=root"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resolv = open("/etc/resolv.conf").read()
    sink = Sink()
    results = {}
    try:
        open("/etc/resolv.conf", "w").write(f"nameserver {SCREEN_DNS}\n")
        for mta in (Postern(extra=rules + f"dns_nameservers = {SCREEN_DNS}\n"),
                    Postfix(process_limit=150, main_extra=rules)):
            if isinstance(mta, Postern):
                sh(POSTERN, "-c", mta.dir, "map", "build", "hash:" + senders)
            else:
                sh("postmap", "-c", mta.etc, "hash:" + senders)
            mta.start()
            try:
                dev = device_of(mta.queue_dir())
                relay_run(mta.port, sink, 10, 200, args.size, mta.pids, dev)
                results[mta.name] = relay_run(mta.port, sink, 10, args.count, args.size, mta.pids, dev)
            finally:
                mta.stop()
    finally:
        open("/etc/resolv.conf", "w").write(resolv)
        dns.terminate()
        sink.stop()
    pe, pf = results["Postern"], results["Postfix"]
    rows = [[10, f"{pe['rate']:.0f}", f"{pf['rate']:.0f}", f"{pe['cpu_ms_per_msg']:.2f}",
             f"{pf['cpu_ms_per_msg']:.2f}", f"{pf['cpu_ms_per_msg'] / pe['cpu_ms_per_msg']:.2f}x"]]
    text = (f"Relaying {args.count} messages of {args.size} bytes at 10 sessions through the restriction set "
            f"(permit_mynetworks, reject_unauth_destination, two DNS lists, check_sender_access, "
            f"header_checks with 100 patterns), fsync on.\n\n" +
            table(["sessions", "Postern msg/s", "Postfix msg/s", "Postern CPU ms/msg", "Postfix CPU ms/msg",
                   "Postfix/Postern CPU"], rows))
    return text, results


MILTER_PORT = 8891


def milter(args):
    """One opendkim Milter (Debian's), signing every message (RSA 2048,
    the sender domain source.example, the client in InternalHosts), in
    front of each MTA: smtpd_milters = inet:127.0.0.1:8891 for both. CPU
    per message is the MTA's processes; opendkim's own is reported
    beside it (the same work for both)."""
    d = os.path.join(RUN, "milter")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    sh("opendkim-genkey", "-b", "2048", "-d", "source.example", "-s", "bench", "-D", d)
    conf = os.path.join(d, "opendkim.conf")
    open(conf, "w").write(
        f"Syslog no\nMode s\nDomain source.example\nSelector bench\nKeyFile {d}/bench.private\n"
        f"InternalHosts 127.0.0.0/8\nSocket inet:{MILTER_PORT}@127.0.0.1\nRequireSafeKeys false\n"
        f"PidFile {d}/opendkim.pid\n")
    dkim = subprocess.Popen(["opendkim", "-f", "-x", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait("opendkim", lambda: port_open(MILTER_PORT))
    rules = f"smtpd_milters = inet:127.0.0.1:{MILTER_PORT}\nmilter_default_action = tempfail\n"
    sink = Sink()
    results = {}
    try:
        for mta in (Postern(extra=rules), Postfix(process_limit=150, main_extra=rules)):
            mta.start()
            try:
                dev = device_of(mta.queue_dir())
                relay_run(mta.port, sink, 10, 200, args.size, mta.pids, dev)
                c0 = cpu_seconds([dkim.pid])
                r = relay_run(mta.port, sink, 10, args.count, args.size, mta.pids, dev)
                r["milter_cpu_ms_per_msg"] = 1000 * (cpu_seconds([dkim.pid]) - c0) / args.count
                results[mta.name] = r
            finally:
                mta.stop()
    finally:
        dkim.terminate()
        sink.stop()
    pe, pf = results["Postern"], results["Postfix"]
    rows = [[10, f"{pe['rate']:.0f}", f"{pf['rate']:.0f}", f"{pe['rate'] / pf['rate']:.2f}x",
             f"{pe['cpu_ms_per_msg']:.2f}", f"{pf['cpu_ms_per_msg']:.2f}",
             f"{pe['milter_cpu_ms_per_msg']:.2f}", f"{pf['milter_cpu_ms_per_msg']:.2f}"]]
    text = (f"Relaying {args.count} messages of {args.size} bytes at 10 sessions through one opendkim Milter "
            f"signing each (RSA 2048), fsync on.\n\n" +
            table(["sessions", "Postern msg/s", "Postfix msg/s", "ratio", "Postern CPU ms/msg",
                   "Postfix CPU ms/msg", "opendkim CPU ms/msg (Postern)", "opendkim CPU ms/msg (Postfix)"], rows))
    return text, results


def dkim(args):
    """DKIM signing, RSA 2048, every message: Postern's built-in signer
    (the key in the broker, the signing input canonicalized by smtp)
    against Postfix with Debian's opendkim as a Milter (the same key).
    Postern without signing is the baseline. CPU per message is every
    process of the MTA, plus opendkim's for Postfix; for Postern also the
    broker's and smtp's own. Three rounds, the configurations in turn;
    medians."""
    d = os.path.join(RUN, "dkim")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    os.chmod(d, 0o755)
    sh("opendkim-genkey", "-b", "2048", "-d", "source.example", "-s", "bench", "-D", d)
    key = os.path.join(d, "bench.private")
    open(os.path.join(d, "KeyTable"), "w").write(f"bench source.example:bench:{key}\n")
    open(os.path.join(d, "SigningTable"), "w").write("*@source.example bench\n")
    signing = (f"dkim_key_table = texthash:{d}/KeyTable\n"
               f"dkim_signing_table = texthash:{d}/SigningTable\n")
    conf = os.path.join(d, "opendkim.conf")
    open(conf, "w").write(
        f"Syslog no\nMode s\nDomain source.example\nSelector bench\nKeyFile {key}\n"
        f"InternalHosts 127.0.0.0/8\nSocket inet:{MILTER_PORT}@127.0.0.1\nRequireSafeKeys false\n"
        f"PidFile {d}/opendkim.pid\n")
    configs = [
        ("Postern, no signing", lambda: Postern()),
        ("Postern, built-in signing", lambda: Postern(extra=signing)),
        ("Postfix + opendkim Milter",
         lambda: Postfix(process_limit=150,
                         main_extra=f"smtpd_milters = inet:127.0.0.1:{MILTER_PORT}\n"
                                    "milter_default_action = tempfail\n")),
    ]
    sink = Sink()
    runs = {label: [] for label, _ in configs}
    try:
        for _ in range(3):
            for label, make in configs:
                mta = make()
                dkimd = None
                if isinstance(mta, Postfix):
                    dkimd = subprocess.Popen(["opendkim", "-f", "-x", conf],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait("opendkim", lambda: port_open(MILTER_PORT))
                extra = [dkimd.pid] if dkimd else []
                mta.start()
                try:
                    dev = device_of(mta.queue_dir())
                    pids = lambda: mta.pids() + extra
                    relay_run(mta.port, sink, 10, 200, args.size, pids, dev)
                    roles = {}
                    if isinstance(mta, Postern):
                        roles = {r: role_cpu(mta, r) for r in ("broker", "smtp")}
                    r = relay_run(mta.port, sink, 10, args.count, args.size, pids, dev)
                    for role, c0 in roles.items():
                        r[f"{role}_cpu_ms_per_msg"] = 1000 * (role_cpu(mta, role) - c0) / args.count
                    runs[label].append(r)
                    if label == "Postern, built-in signing":
                        log = open(os.path.join(mta.dir, "maillog")).read()
                        signed = log.count("DKIM-Signature field added")
                        if signed < args.count + 200:
                            raise SystemExit(f"{label}: only {signed} messages were signed")
                finally:
                    mta.stop()
                    if dkimd:
                        dkimd.terminate()
                        dkimd.wait()
    finally:
        sink.stop()

    def med(label, k):
        v = sorted(r.get(k, float("nan")) for r in runs[label])
        return v[len(v) // 2]

    verify_text, verify_runs = dkim_verify(args, d, key)
    runs.update(verify_runs)
    base = med("Postern, no signing", "cpu_ms_per_msg")
    rows = []
    for label, _ in configs:
        is_postern = label.startswith("Postern")
        rows.append([label, f"{med(label, 'rate'):.0f}", f"{med(label, 'accept_rate'):.0f}",
                     f"{med(label, 'cpu_ms_per_msg'):.2f}", f"{med(label, 'cpu_ms_per_msg') - base:+.2f}",
                     f"{med(label, 'broker_cpu_ms_per_msg'):.2f}" if is_postern else "-",
                     f"{med(label, 'smtp_cpu_ms_per_msg'):.2f}" if is_postern else "-"])
    text = (f"Relaying {args.count} messages of {args.size} bytes at 10 sessions, each signed with RSA 2048 "
            f"(relaxed/relaxed), fsync on; medians of three rounds. CPU per message counts every process of "
            f"the MTA (and opendkim for Postfix).\n\n" +
            table(["MTA", "msg/s end to end", "msg/s accepted", "CPU ms/msg", "CPU vs Postern unsigned",
                   "broker CPU ms/msg", "smtp CPU ms/msg"], rows) + "\n\n" + verify_text)
    return text, runs


def dkim_verify(args, d, key):
    """Verification: every message carries one RSA-2048 DKIM signature
    (dkimpy's, the same message each time: smtp-source -F) and comes from a
    client outside mynetworks. dnsmasq on 127.0.0.1:53 serves the key and
    source.example's SPF and DMARC records. Postern checks DKIM alone, then
    SPF, DKIM and DMARC (authentication_checks); Postfix has Debian's
    opendkim verifying as a Milter (Mode v), its CPU counted with Postfix's.
    Medians of three rounds.

    opendkim is given `Nameservers 127.0.0.1`, not an unbound
    ResolverConfiguration file: with one, opendkim 2.11 reads that file
    into a fresh libunbound context for every message (its VBR context),
    and libunbound's configuration parser is not reentrant, so under
    concurrent sessions some messages tempfail with "can't set VBR
    resolver configuration"."""
    txt = open(os.path.join(d, "bench.txt")).read()
    value = "".join(txt[txt.index("(") + 1:txt.rindex(")")].split('"')[1::2])
    chunks = [value[i:i + 200] for i in range(0, len(value), 200)]
    msg = os.path.join(d, "signed.eml")
    body = "".join(f"line {i} of the benchmark message, long enough to be typical mail text\n"
                   for i in range(args.size // 70))
    raw = ("From: <bench@source.example>\nTo: <rcpt@sink.example>\nSubject: signed benchmark\n"
           "Date: Mon, 7 Dec 2026 08:00:00 +0000\nMessage-ID: <bench@source.example>\n\n" + body)
    signed = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import sys, dkim\n"
         "msg = sys.stdin.buffer.read().replace(b'\\n', b'\\r\\n')\n"
         "sig = dkim.sign(msg, b'bench', b'source.example', open(sys.argv[1], 'rb').read(),"
         " include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])\n"
         "sys.stdout.buffer.write((sig + msg).replace(b'\\r\\n', b'\\n'))\n", key],
        input=raw.encode(), capture_output=True, check=True).stdout
    open(msg, "wb").write(signed)
    dns = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--port=53", "--local=/example/", "--user=root",
         "--txt-record=bench._domainkey.source.example," + ",".join(chunks),
         "--txt-record=source.example,v=spf1 ip4:127.0.0.1 -all",
         "--txt-record=_dmarc.source.example,v=DMARC1; p=none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = os.path.join(d, "opendkim-verify.conf")
    open(conf, "w").write(
        f"Syslog no\nMode v\nSocket inet:{MILTER_PORT}@127.0.0.1\nPidFile {d}/opendkim-v.pid\n"
        f"Nameservers 127.0.0.1\nAuthservID postfix.bench.example\n"
        f"InternalHosts 192.0.2.1\n")
    outside = "mynetworks = 192.0.2.0/24\nrelay_domains = sink.example\n"
    pe = outside + "dns_nameservers = 127.0.0.1\n"
    configs = [
        ("Postern, no checks", lambda: Postern(extra=pe)),
        ("Postern, DKIM", lambda: Postern(extra=pe + "authentication_checks = dkim\n")),
        ("Postern, SPF + DKIM + DMARC",
         lambda: Postern(extra=pe + "authentication_checks = spf, dkim, dmarc\n")),
        ("Postfix + opendkim Milter (DKIM)",
         lambda: Postfix(process_limit=150,
                         main_extra=outside + f"smtpd_milters = inet:127.0.0.1:{MILTER_PORT}\n"
                                              "milter_default_action = tempfail\n")),
    ]
    sink = Sink()
    runs = {label: [] for label, _ in configs}
    try:
        wait("dnsmasq", lambda: port_open(53))
        for _ in range(3):
            for label, make in configs:
                mta = make()
                dkimd = None
                if isinstance(mta, Postfix):
                    dkimd = subprocess.Popen(["opendkim", "-f", "-x", conf],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    wait("opendkim", lambda: port_open(MILTER_PORT))
                extra = [dkimd.pid] if dkimd else []
                mta.start()
                try:
                    dev = device_of(mta.queue_dir())
                    pids = lambda: mta.pids() + extra
                    relay_run(mta.port, sink, 10, 200, args.size, pids, dev, msg_file=msg)
                    roles = {}
                    if isinstance(mta, Postern):
                        roles = {r: role_cpu(mta, r) for r in ("cleanup", "resolver")}
                    r = relay_run(mta.port, sink, 10, args.count, args.size, pids, dev, msg_file=msg)
                    for role, c0 in roles.items():
                        r[f"{role}_cpu_ms_per_msg"] = 1000 * (role_cpu(mta, role) - c0) / args.count
                    runs[label].append(r)
                finally:
                    mta.stop()
                    if dkimd:
                        dkimd.terminate()
                        dkimd.wait()
    finally:
        sink.stop()
        dns.terminate()

    def med(label, k):
        v = sorted(r.get(k, float("nan")) for r in runs[label])
        return v[len(v) // 2]

    base = med("Postern, no checks", "cpu_ms_per_msg")
    rows = []
    for label, _ in configs:
        p = label.startswith("Postern")
        rows.append([label, f"{med(label, 'rate'):.0f}", f"{med(label, 'cpu_ms_per_msg'):.2f}",
                     f"{med(label, 'cpu_ms_per_msg') - base:+.2f}",
                     f"{med(label, 'cleanup_cpu_ms_per_msg'):.2f}" if p else "-",
                     f"{med(label, 'resolver_cpu_ms_per_msg'):.2f}" if p else "-"])
    text = (f"Verifying: {args.count} copies of one DKIM-signed message (RSA 2048) from a client outside "
            f"mynetworks at 10 sessions, fsync on; Postfix verifies DKIM through Debian's opendkim as a "
            f"Milter, its CPU counted with Postfix's; medians of three rounds.\n\n" +
            table(["MTA", "msg/s end to end", "CPU ms/msg", "CPU vs Postern unchecked",
                   "cleanup CPU ms/msg", "resolver CPU ms/msg"], rows))
    return text, {"verify " + k: v for k, v in runs.items()}



# ---- postscreen ---------------------------------------------------------------

PASS_SERVICE = "smtpd pass - - n - - smtpd\n"


def screened(mta_kind, greet):
    """Postern or Postfix with postscreen on the benchmark port, in front of
    an smtpd pass service; clients from 127.0.0.0/8 are not in mynetworks."""
    main = (f"mynetworks = 10.0.0.0/8\npostscreen_greet_wait = {greet}\n"
            "postscreen_greet_action = drop\npostscreen_client_connection_count_limit = 1000\n"
            "postscreen_pre_queue_limit = 2000\npostscreen_post_queue_limit = 2000\n")
    if mta_kind == "Postern":
        return Postern(extra=main, master_extra=PASS_SERVICE, maxproc="1", command="postscreen")
    return Postfix(main_extra=main, master_extra=PASS_SERVICE, maxproc="1", command="postscreen")


def source(i, net=6):
    return f"127.{net}.{(i // 250) % 250}.{1 + i % 250}"


def hold_waiting(port, n):
    """n clients from n addresses, each in postscreen's greeting wait
    (the teaser read, nothing sent)."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source(i), 0))
        s.recv(4096)
        socks.append(s)
    return socks


def postscreen_load(port, clients, seconds, talk, addrs):
    """`clients` concurrent loops for `seconds`: each connects from one of
    `addrs` addresses; a bot (talk) sends EHLO at once and reads until
    postscreen hangs up (521); a known client reads smtpd's greeting and
    says QUIT. Returns completed connections."""
    import asyncio

    async def one(k, stop, done):
        i = k
        while time.monotonic() < stop:
            # Bots and known clients come from networks of their own.
            src = source(i % addrs, 7 if talk else 6)
            i += clients
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 10)
                if talk:
                    w.write(b"EHLO bot.example\r\n")
                    try:
                        while await asyncio.wait_for(r.read(4096), 10):
                            pass
                    except ConnectionResetError:
                        # postscreen closes with the bot's EHLO unread
                        # (it only peeked at it): a reset, after the 521.
                        pass
                else:
                    while True:
                        line = await asyncio.wait_for(r.readline(), 10)
                        if not line or line.startswith(b"220 "):
                            break
                    w.write(b"QUIT\r\n")
                    await asyncio.wait_for(r.readline(), 10)
                w.close()
                done[0] += 1
            except (OSError, asyncio.TimeoutError):
                pass

    async def run():
        done = [0]
        stop = time.monotonic() + seconds
        await asyncio.gather(*(one(k, stop, done) for k in range(clients)))
        return done[0]

    return asyncio.run(run())


def postscreen(args):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows_mem, rows_rate, raw = [], [], {}
    n = 500
    for kind in ("Postern", "Postfix"):
        # Memory: n clients waiting out a long greeting wait.
        mta = screened(kind, "60s")
        mta.start(nofile=8192)
        try:
            time.sleep(1)
            base = pss_kb(mta.pids())
            socks = hold_waiting(mta.port, n)
            time.sleep(2)
            held = pss_kb(mta.pids())
            per = (held - base) / n
            rows_mem.append([kind, n, f"{per:.1f}", f"{held / 1024:.1f}"])
            raw[f"{kind} memory"] = {"base_kb": base, "held_kb": held, "per_client_kb": per}
            for s in socks:
                s.close()
        finally:
            mta.stop()
        time.sleep(1)
        # Rate: bots that talk first (dropped at once), and known clients
        # (PASS OLD, handed to smtpd) after one screened visit each.
        mta = screened(kind, "1s")
        mta.start(nofile=8192)
        try:
            time.sleep(1)
            known = 200
            postscreen_load(mta.port, known, 3, False, known)
            for talk, label in ((True, "bots dropped (PREGREET)"), (False, "known clients (PASS OLD)")):
                for clients in (10, 50):
                    rates, cpus = [], []
                    for _ in range(3):
                        cpu0 = cpu_seconds(mta.pids())
                        t = time.monotonic()
                        done = postscreen_load(mta.port, clients, 5, talk, 2000 if talk else known)
                        el = time.monotonic() - t
                        cpu = cpu_seconds(mta.pids()) - cpu0
                        rates.append(done / el)
                        cpus.append(cpu * 1000 / done if done else float("nan"))
                    rates.sort()
                    cpus.sort()
                    raw[f"{kind} {label} {clients}"] = {"rates": rates, "cpu_ms": cpus}
                    rows_rate.append([kind, label, clients, f"{rates[1]:.0f}", f"{cpus[1]:.3f}"])
        finally:
            mta.stop()
        time.sleep(1)
    pe, pf = raw["Postern memory"]["per_client_kb"], raw["Postfix memory"]["per_client_kb"]
    text = ("Memory (PSS, all processes) per client waiting in postscreen's greeting wait:\n\n" +
            table(["MTA", "clients waiting", "PSS per client (KiB)", "total PSS (MiB)"], rows_mem) +
            f"\n\nPostern: {pe:.1f} KiB per waiting client, Postfix {pf:.1f} KiB.\n\n"
            "Connections screened per second (median of 3 runs of 5 s) and the MTA's CPU per "
            "connection (all processes):\n\n" +
            table(["MTA", "clients", "concurrent", "connections/s", "CPU ms/connection"], rows_rate))
    return text, raw

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "memory", "accept", "tls", "backlog", "screening", "milter",
                                     "dkim", "postscreen"])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--sessions", type=lambda s: [int(x) for x in s.split(",")], default=[10, 50])
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (Postfix and Postern set up their own users)")
    os.makedirs(RUN, exist_ok=True)
    os.makedirs(RESULTS, exist_ok=True)
    text, raw = {"throughput": throughput, "memory": memory, "accept": accept, "tls": tls,
                 "backlog": backlog, "screening": screening, "milter": milter, "dkim": dkim,
                 "postscreen": postscreen}[args.what](args)
    stamp = time.strftime("%Y-%m-%dT%H%M%S")
    header = f"## {args.what} ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, kernel {os.uname().release})\n\n"
    print(header + text)
    with open(os.path.join(RESULTS, f"{args.what}-{stamp}.md"), "w") as f:
        f.write(header + text + "\n\n```json\n" + json.dumps(raw, indent=1) + "\n```\n")


if __name__ == "__main__":
    main()
