@0xdd447bcf2d20ab22;
# qmgr -> delivery agents (local, smtp): one delivery request per channel at
# a time, with a read-only descriptor of the queue file beside it (none for
# an address-verification probe). The agent answers with one result per
# recipient; the queue manager decides what happens next.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Recipient {
  index @0 :UInt32;
  address @1 :Text;
  orcpt @2 :Text;
  notify @3 :UInt8;
}

struct Request {
  queueId @0 :Text;
  sender @1 :Text;
  nexthop @2 :Text;              # "" for local; host, [host], [host]:port
  recipients @3 :List(Recipient);
  envid @4 :Text;
  ret @5 :UInt8;
  smtputf8 @6 :Bool;
  body8bit @7 :Bool;
  arrivalUs @8 :UInt64;          # when the message arrived
  activeUs @9 :UInt64;           # when the queue manager took it in
  size @10 :UInt64;
  probe @11 :Bool;               # an address-verification probe: no
                                 # descriptor comes along, the agent stops
                                 # before the content (smtp: no DATA)
}

enum Status {
  sent @0;
  deferred @1;
  bounced @2;
}

struct Result {
  index @0 :UInt32;
  status @1 :Status;
  dsn @2 :Text;                  # RFC 3463 status, e.g. 5.1.1
  text @3 :Text;                 # the reply or reason, safe for a remote DSN
  relay @4 :Text;                # host[ip]:port, or "local"
  remoteMta @5 :Text;            # the remote server's name, "" if none
}

struct Reply {
  results @0 :List(Result);
}
