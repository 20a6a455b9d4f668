@0xd2c1487795e78dc8;

# verify -> qmgr: one address-verification probe. qmgr routes the address
# as it would route mail (transport_maps, local domains, relayhost) and
# asks the delivery agent to try it without a message: smtp sends MAIL and
# RCPT and stops before DATA; local checks that a mailbox or alias would
# take it. Nothing is queued, so no message, sender address or header can
# pose as a probe, and the result goes back only to the verify role.

const version :UInt32 = 1;

struct Request {
  address @0 :Text;          # at most 512 bytes
  sender @1 :Text;           # address_verify_sender, "" for <>
}

enum Status {
  deliverable @0;
  undeliverable @1;
  deferred @2;               # the next hop (or the route) failed temporarily
  notTried @3;               # qmgr did not try: too many probes pending;
                             # verify records nothing and asks again later
}

struct Reply {
  status @0 :Status;
  dsn @1 :Text;              # RFC 3463 status, e.g. 5.1.1
  text @2 :Text;             # the next hop's reply or the reason, at most 1024 bytes
}
