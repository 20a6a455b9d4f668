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
  byname        550 5.1.1 on RCPT to a local part that starts with
                "unknown", 250 for any other
Every RCPT address is appended to DIR/rcpt.log, one per line.

Options after DIR:
  --tls CHAIN KEY [CA]  offer STARTTLS with this certificate; with CA, ask
                        for a client certificate and record whether one
                        verified ("client_cert" in the envelope)
  --auth USER:PASS      offer AUTH PLAIN/LOGIN (after STARTTLS when --tls)
                        and require it
  --implicit-tls CHAIN KEY  SMTPS: TLS from the first byte (port 465
                        style), no STARTTLS
  --tls-max 1.2         (after --tls) speak TLS 1.2 at most
  --requiretls          announce REQUIRETLS (RFC 8689) after STARTTLS and
                        accept the MAIL parameter there ("requiretls" in
                        the envelope)
"""
import asyncio, json, os, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as Server, AuthResult, LoginPassword

host, port, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opts = sys.argv[4:]
tls_context, auth, implicit, requiretls = None, None, None, False
sni_seen = {}  # id(ssl object) -> the server name the client asked for
while opts:
    if opts[0] == "--tls":
        chain, key = opts[1], opts[2]
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(chain, key)
        tls_context.sni_callback = lambda obj, name, ctx: sni_seen.__setitem__(id(obj), name)
        rest = opts[3:]
        if rest and not rest[0].startswith("--"):
            tls_context.load_verify_locations(rest[0])
            tls_context.verify_mode = ssl.CERT_OPTIONAL
            rest = rest[1:]
        opts = rest
    elif opts[0] == "--tls-max" and opts[1] == "1.2":
        tls_context.maximum_version = ssl.TLSVersion.TLSv1_2
        opts = opts[2:]
    elif opts[0] == "--implicit-tls":
        implicit = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        implicit.load_cert_chain(opts[1], opts[2])
        opts = opts[3:]
    elif opts[0] == "--requiretls":
        requiretls = True
        opts = opts[1:]
    elif opts[0] == "--auth":
        auth = opts[1].encode().split(b":", 1)
        opts = opts[2:]
    else:
        sys.exit("unknown option " + opts[0])

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and [auth_data.login, auth_data.password] == auth
    # handled=False: aiosmtpd answers 535 itself on failure.
    return AuthResult(success=ok, handled=False)
os.makedirs(outdir, exist_ok=True)
counter = [0]

def mode():
    try:
        return open(os.path.join(outdir, "mode")).read().strip()
    except FileNotFoundError:
        return "accept"

class ReqTlsServer(Server):
    """REQUIRETLS inside TLS: the MAIL parameter is taken off before
    aiosmtpd, which knows no such parameter, reads the command."""
    async def smtp_MAIL(self, arg):
        self.requiretls_seen = False
        if requiretls and arg and self._tls_protocol:
            words = arg.split()
            keep = [w for w in words if w.upper() != "REQUIRETLS"]
            self.requiretls_seen = len(keep) != len(words)
            arg = " ".join(keep)
        return await super().smtp_MAIL(arg)


class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if requiretls and server._tls_protocol:
            responses.insert(len(responses) - 1, "250-REQUIRETLS")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if mode() == "close421":
            server.transport.write(b"421 4.3.2 Service shutting down\r\n")
            server.transport.close()
            return "421 4.3.2 Service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with open(os.path.join(outdir, "rcpt.log"), "a") as f:
            f.write(address + "\n")
        m = mode()
        if m == "byname" and address.lower().startswith("unknown"):
            return "550 5.1.1 No such user here"
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
            sslobj = server.transport.get_extra_info("ssl_object")
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "mail_options": envelope.mail_options, "rcpt_options": envelope.rcpt_options,
                       "peer": str(session.peer), "time": __import__("time").time(),
                       "tls": sslobj.version() if sslobj else None,
                       "cipher": sslobj.cipher()[0] if sslobj else None,
                       "sni": sni_seen.get(id(sslobj)) if sslobj else None,
                       "client_cert": bool(sslobj and sslobj.getpeercert()),
                       "auth": bool(session.authenticated),
                       "requiretls": bool(getattr(server, "requiretls_seen", False))}, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 Ok: stored as %04d" % counter[0]

class Quiet(Controller):
    def factory(self):
        kw = {}
        if tls_context:
            kw["tls_context"] = tls_context
        if auth:
            kw.update(authenticator=authenticator, auth_required=True,
                      auth_require_tls=bool(tls_context) and not implicit)
        return ReqTlsServer(self.handler, hostname="sink.test.example", enable_SMTPUTF8=True, decode_data=False, **kw)

c = Quiet(Handler(), hostname=host, port=port, ssl_context=implicit)
c.start()
open(os.path.join(outdir, "ready"), "w").close()
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
