@0xc41d6f0a9e2b7d35;

# smtp -> sts: the MTA-STS policy (RFC 8461) of a recipient domain. The sts
# role looks the _mta-sts TXT record up (through the resolver), fetches the
# policy over HTTPS when the record's id is new or the cached policy
# expired, and keeps it in the state store. The answer never waits for
# more than the role's fetch deadline.
#
# smtp -> sts also counts TLS sessions for TLS-RPT (RFC 8460,
# smtp_tls_rpt_enable): the sts role keeps the day's counts per recipient
# domain and policy in the state store and sends the daily reports.

const version :UInt32 = 2;

struct Request {
  union {
    domain @0 :Text;         # the policy of this next-hop domain, at most 255 bytes
    count @1 :Count;
  }
}

# One TLS session (or attempt) to a domain that has a policy.
struct Count {
  domain @0 :Text;           # the recipient domain, at most 255 bytes
  kind @1 :Text;             # "sts" or "tlsa"
  strings @2 :List(Text);    # the policy as text: at most 64 of 255 bytes
  mx @3 :List(Text);         # MTA-STS mx patterns, or the TLSA host: at most 64
  success @4 :Bool;
  resultType @5 :Text;       # RFC 8460 4.3's result type, when it failed
  sendingIp @6 :Text;
  mxHost @7 :Text;
  receivingIp @8 :Text;
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
    counted @2 :Void;        # a count was taken
  }
}
