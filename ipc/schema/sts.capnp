@0xc41d6f0a9e2b7d35;

# smtp -> sts: the MTA-STS policy (RFC 8461) of a recipient domain. The sts
# role looks the _mta-sts TXT record up (through the resolver), fetches the
# policy over HTTPS when the record's id is new or the cached policy
# expired, and keeps it in the state store. The answer never waits for
# more than the role's fetch deadline.

const version :UInt32 = 1;

struct Request {
  domain @0 :Text;           # the next-hop domain, at most 255 bytes
}

enum Mode {
  enforce @0;
  testing @1;
  none @2;
}

struct Policy {
  mode @0 :Mode;
  mx @1 :List(Text);         # patterns: host names or *.domain, at most 64 of 255 bytes
  maxAge @2 :UInt32;         # seconds, at most 31557600
  id @3 :Text;               # the TXT record's id it was fetched for, at most 32 bytes
}

struct Reply {
  union {
    policy @0 :Policy;
    # No policy applies; why (printable, at most 512 bytes; empty when
    # the domain publishes no _mta-sts record).
    none @1 :Text;
  }
}
