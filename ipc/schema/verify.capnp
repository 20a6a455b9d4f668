@0xb6c503314c523d6d;

# smtpd -> verify: what the address-verification cache knows about an
# address (reject_unverified_recipient, reject_unverified_sender). Asking
# may start a probe (verify -> qmgr, probe.capnp); the answer never waits
# for one: an address without a usable record is "inProgress".

const version :UInt32 = 1;

struct Request {
  address @0 :Text;          # the address as the client gave it, at most 512 bytes
}

enum Status {
  deliverable @0;            # the next hop accepted RCPT
  undeliverable @1;          # the next hop refused it for good
  deferred @2;               # the probe failed temporarily, or no status is available
  inProgress @3;             # no usable record yet: a probe is under way
}

struct Reply {
  status @0 :Status;
  text @1 :Text;             # the reason, printable, at most 512 bytes
}
