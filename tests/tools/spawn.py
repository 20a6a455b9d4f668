#!/usr/bin/python3
"""Postfix's spawn(8) for the tests: listens on --listen IP:PORT and runs
the command after `--` for each connection, with the connection as its
standard input and output (how policyd-spf expects to be run)."""
import argparse
import socket
import subprocess
import sys

p = argparse.ArgumentParser()
p.add_argument("--listen", required=True)
p.add_argument("--ready", required=True)
p.add_argument("command", nargs=argparse.REMAINDER)
args = p.parse_args()
command = args.command[1:] if args.command[:1] == ["--"] else args.command
host, port = args.listen.rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
s.listen(64)
with open(args.ready, "w") as f:
    f.write("ok\n")
children = []
while True:
    conn, _ = s.accept()
    children = [c for c in children if c.poll() is None]
    if len(children) >= 50:
        conn.close()
        continue
    children.append(
        subprocess.Popen(command, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL)
    )
    conn.close()
