@0x96444293cf80ab11;
# postern queue ... -> qmgr, over a channel the master hands out through
# the control socket. Client-reachable: a violation drops only this channel.

# Bump when any message in this file changes shape.
const version :UInt32 = 3;

struct Request {
  union {
    list @0 :Void;
    show @1 :Text;
    flush @2 :Void;
    delete @3 :List(Text);   # queue ids, or ["ALL"]
    hold @4 :List(Text);
    release @5 :List(Text);
    requeue @6 :List(Text);
    explain @7 :Text;        # an address or a domain: how mail for it is routed now
  }
}

struct Rcpt {
  address @0 :Text;
  delayReason @1 :Text;
}

struct Entry {
  queueId @0 :Text;
  queueName @1 :Text;        # active | deferred | hold
  arrivalTime @2 :UInt64;    # seconds since the epoch
  messageSize @3 :UInt64;
  sender @4 :Text;
  recipients @5 :List(Rcpt);
  forcedExpire @6 :Bool;
}

# One host a delivery would try, best first.
struct Hop {
  host @0 :Text;
  preference @1 :UInt16;     # its MX preference; 0 without MX
  addresses @2 :List(Text);  # at most 16
}

# `postern queue explain`: the route, the limits and the backoff state.
struct Explanation {
  address @0 :Text;          # the address routed (postmaster@DOMAIN for a domain)
  transport @1 :Text;        # smtp, lmtp, local, error, discard or defer
  nexthop @2 :Text;          # as routing gave it
  outcome @3 :Text;          # error, discard, defer: why; otherwise empty
  hops @4 :List(Hop);        # at most 16
  dnsError @5 :Text;         # why no host could be found, if none
  tlsLevel @6 :Text;         # the TLS security level a delivery would use (a policy table
                             # value with its attributes), at most 512 bytes
  tlsWhy @7 :Text;           # which setting decided it, at most 512 bytes
  concurrency @8 :UInt32;    # the destination's concurrency limit
  rateDelayMs @9 :UInt64;
  recipientLimit @10 :UInt32;
  inFlight @11 :UInt32;      # deliveries to this destination now
  waiting @12 :UInt32;       # recipients in the active set waiting for it
  deferred @13 :UInt32;      # messages outside the active set with a recipient in the domain
  nextRetry @14 :UInt64;     # the earliest next attempt among them (seconds since the epoch); 0: none
}

struct Reply {
  union {
    entries @0 :List(Entry);  # a batch; more may follow
    content @1 :Data;         # a piece of the message (show)
    end @2 :Void;             # the listing or content is complete
    done @3 :List(Text);      # what an operation did, one line each
    error @4 :Text;
    explained @5 :Explanation;
  }
}
