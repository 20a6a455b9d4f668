#!/usr/bin/python3
"""A Milter (Debian's pymilter, libmilter underneath) that records what it
is told and changes each message as the message itself asks.

Run with Debian's /usr/bin/python3. The message's X-Test-Do header lists
what to do at the end of the message, in order:

  add          add X-Milter-Added: yes (at the end)
  insert       insert X-Milter-Top: first at the top
  change       change the first Subject to "changed by milter"
  delete       delete the first X-Delete-Me
  body         replace the body
  from         change the sender to <changed@example.org>
  addrcpt      add the recipient <added@example.net>
  addrcptpar   add <added-par@example.net> with NOTIFY=NEVER
  delrcpt      delete the recipient named in X-Test-Del
  quarantine   quarantine (the message goes on hold)
  reject       554 5.7.1 milter says no
  tempfail     451 4.7.1 milter says later
  discard      discard
  die-in-body  send half a body replacement, then exit the process

A client whose address ends in .250 is refused at CONNECT. A recipient
whose address starts with reject-rcpt is refused at RCPT
(550 5.1.1 no such user here).

Each message's record is one JSON line in --log: the connect, HELO, MAIL
and RCPT arguments, the headers as they came, the body's length, and the
macros it could see at each stage.
"""
import argparse
import json
import os
import sys
import threading

import Milter

LOCK = threading.Lock()
ARGS = None
MACROS = ["i", "j", "_", "v", "{daemon_name}", "{client_addr}", "{client_name}",
          "{client_port}", "{mail_addr}", "{mail_host}", "{mail_mailer}",
          "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}", "{tls_version}",
          "{cipher}"]


class Recorder(Milter.Base):
    def __init__(self):
        self.rec = {}

    def syms(self, stage):
        m = {}
        for name in MACROS:
            v = self.getsymval(name)
            if v is not None:
                m[name] = v
        self.rec.setdefault("macros", {})[stage] = m

    def connect(self, hostname, family, hostaddr):
        self.conn = {"host": hostname, "addr": list(hostaddr) if isinstance(hostaddr, tuple) else hostaddr}
        self.syms_conn = None
        self.rec = {"connect": self.conn}
        self.syms("connect")
        if isinstance(hostaddr, tuple) and hostaddr[0].endswith(".250"):
            self.setreply("550", "5.7.1", "go away")
            return Milter.REJECT
        return Milter.CONTINUE

    def hello(self, heloname):
        self.rec["helo"] = heloname
        return Milter.CONTINUE

    def envfrom(self, f, *params):
        self.rec = {"connect": self.conn, "helo": self.rec.get("helo"),
                    "mail": [f] + list(params), "rcpt": [], "headers": [],
                    "macros": self.rec.get("macros", {})}
        self.syms("mail")
        self.todo = []
        self.delete = None
        self.body_len = 0
        return Milter.CONTINUE

    def envrcpt(self, to, *params):
        self.rec["rcpt"].append([to] + list(params))
        self.syms("rcpt")
        if to.startswith("<reject-rcpt"):
            self.setreply("550", "5.1.1", "no such user here")
            return Milter.REJECT
        return Milter.CONTINUE

    # No reply to each header and to the end of the headers (SMFIP_NR_HDR,
    # SMFIP_NR_EOH), and no DATA or unknown-command events at all
    # (SMFIP_NODATA, SMFIP_NOUNKNOWN): the MTA must not wait for answers
    # that never come.
    @Milter.noreply
    def header(self, name, value):
        self.rec["headers"].append([name, value])
        if name.lower() == "x-test-do":
            self.todo = value.split()
        if name.lower() == "x-test-del":
            self.delete = value.strip()
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self):
        self.syms("eoh")
        return Milter.CONTINUE

    def body(self, chunk):
        self.body_len += len(chunk)
        # Enough of the body: SMFIR_SKIP (negotiated, SMFIP_SKIP).
        if self.body_len > 4096:
            return Milter.SKIP
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self):
        return Milter.CONTINUE

    @Milter.nocallback
    def unknown(self, cmd):
        return Milter.CONTINUE

    def eom(self):
        self.syms("eom")
        self.rec["body_len"] = self.body_len
        self.rec["todo"] = self.todo
        with LOCK:
            with open(ARGS.log, "a") as f:
                f.write(json.dumps(self.rec) + "\n")
        verdict = Milter.ACCEPT
        for t in self.todo:
            if t == "add":
                self.addheader("X-Milter-Added", "yes")
            elif t == "insert":
                self.addheader("X-Milter-Top", "first", 0)
            elif t == "change":
                self.chgheader("Subject", 1, "changed by milter")
            elif t == "delete":
                self.chgheader("X-Delete-Me", 1, None)
            elif t == "body":
                self.replacebody(b"replaced by the milter\r\nsecond line\r\n")
            elif t == "from":
                self.chgfrom("<changed@example.org>")
            elif t == "addrcpt":
                self.addrcpt("<added@example.net>")
            elif t == "addrcptpar":
                self.addrcpt("<added-par@example.net>", "NOTIFY=NEVER")
            elif t == "delrcpt":
                self.delrcpt("<%s>" % self.delete)
            elif t == "quarantine":
                self.quarantine("held by the test milter")
            elif t == "reject":
                self.setreply("554", "5.7.1", "milter says no")
                verdict = Milter.REJECT
            elif t == "tempfail":
                self.setreply("451", "4.7.1", "milter says later")
                verdict = Milter.TEMPFAIL
            elif t == "discard":
                verdict = Milter.DISCARD
            elif t == "die-in-body":
                self.addheader("X-Before-Death", "yes")
                self.replacebody(b"half of a new body\r\n")
                sys.stdout.flush()
                os._exit(3)
        return verdict


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True, help="inet:PORT@IP or unix:/path")
    p.add_argument("--log", required=True)
    p.add_argument("--ready", required=True)
    ARGS = p.parse_args()
    Milter.factory = Recorder
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGBODY | Milter.ADDRCPT
                     | Milter.ADDRCPT_PAR | Milter.DELRCPT | Milter.CHGHDRS
                     | Milter.QUARANTINE | Milter.CHGFROM)
    # Ready once the socket is bound: libmilter binds in runmilter, so
    # the test waits for the port itself too.
    open(ARGS.ready, "w").close()
    Milter.runmilter("postern-test", ARGS.listen, 60)


if __name__ == "__main__":
    main()
