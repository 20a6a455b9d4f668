#!/usr/bin/python3
"""A real SMTP server (aiosmtpd) to use as Postern's next hop in tests.

Every accepted message is written, byte for byte as received after
dot-unstuffing, to DIR/NNNN.eml, with its envelope in DIR/NNNN.env (JSON).
Behaviour can be changed while it runs by writing DIR/mode:
  accept        (default) 250
  tempfail      451 4.3.0 on RCPT
  reject        550 5.1.1 on RCPT
  close421      421 after MAIL FROM
  slow          accept, but take half a second over DATA
"""
import asyncio, json, os, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as Server

host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(outdir, exist_ok=True)
counter = [0]

def mode():
    try:
        return open(os.path.join(outdir, "mode")).read().strip()
    except FileNotFoundError:
        return "accept"

class Handler:
    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if mode() == "close421":
            server.transport.write(b"421 4.3.2 Service shutting down\r\n")
            server.transport.close()
            return "421 4.3.2 Service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        m = mode()
        if m == "tempfail":
            return "451 4.3.0 Temporary failure, try again"
        if m == "reject":
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if mode() == "slow":
            await asyncio.sleep(0.5)
        counter[0] += 1
        base = os.path.join(outdir, "%04d" % counter[0])
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".env", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options, "rcpt_options": envelope.rcpt_options,
                       "peer": str(session.peer), "time": __import__("time").time()}, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: stored as %04d" % counter[0]

class Quiet(Controller):
    def factory(self):
        return Server(self.handler, hostname="sink.test.example", enable_SMTPUTF8=True, decode_data=False)

c = Quiet(Handler(), hostname=host, port=port)
c.start()
open(os.path.join(outdir, "ready"), "w").close()
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
