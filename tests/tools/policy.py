#!/usr/bin/python3
"""A policy server for the tests (Postfix's policy delegation protocol).

Listens on --listen IP:PORT or --unix PATH. Every request is appended to
--log as one JSON line: {"conn": N, "attrs": [[name, value], ...]}, with
the attributes in the order they came, so a test can compare them with
Postfix's documented list, see the connection each request came on, and
count repeats.

What it answers is read from --actions (a JSON object, re-read for every
request) by the request's recipient, else its sender, else "*": an
access(5) action to send as `action=...`, or one of the faults:
  !garbage   a reply without an action attribute
  !huge      an action line of 1 MB
  !close     close the connection without a reply
  !sleep N   wait N seconds, then answer DUNNO
With no entry the answer is DUNNO.
"""
import argparse
import asyncio
import itertools
import json
import os

conn_ids = itertools.count(1)


def choose(actions_path, attrs):
    try:
        with open(actions_path) as f:
            actions = json.load(f)
    except (OSError, ValueError):
        actions = {}
    d = dict(attrs)
    for key in (d.get("recipient", ""), d.get("sender", ""), "*"):
        if key and key in actions:
            return actions[key]
    return "DUNNO"


async def serve(reader, writer, args):
    conn = next(conn_ids)
    try:
        while True:
            attrs = []
            while True:
                line = await reader.readline()
                if not line:
                    return
                line = line.rstrip(b"\n").decode("utf-8", "replace")
                if line == "":
                    break
                name, _, value = line.partition("=")
                attrs.append([name, value])
            with open(args.log, "a") as f:
                f.write(json.dumps({"conn": conn, "attrs": attrs}) + "\n")
            action = choose(args.actions, attrs)
            if action == "!garbage":
                writer.write(b"this is not a reply\n\n")
            elif action == "!huge":
                writer.write(b"action=" + b"x" * (1 << 20) + b"\n\n")
            elif action == "!close":
                return
            elif action.startswith("!sleep "):
                await asyncio.sleep(float(action.split()[1]))
                writer.write(b"action=DUNNO\n\n")
            else:
                writer.write(("action=%s\n\n" % action).encode())
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen")
    p.add_argument("--unix")
    p.add_argument("--log", required=True)
    p.add_argument("--actions", required=True)
    p.add_argument("--ready", required=True, help="file written once listening")
    args = p.parse_args()
    handler = lambda r, w: serve(r, w, args)
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        server = await asyncio.start_unix_server(handler, path=args.unix)
        os.chmod(args.unix, 0o666)
    else:
        host, port = args.listen.rsplit(":", 1)
        server = await asyncio.start_server(handler, host, int(port))
    with open(args.ready, "w") as f:
        f.write("ok\n")
    async with server:
        await server.serve_forever()


asyncio.run(main())
