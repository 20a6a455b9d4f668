@0xb7c81a9ef05c28bc;
# smtp (and smtpd) -> resolver: every DNS query goes through the resolver
# daemon, the only one besides smtp with network access.

# Bump when any message in this file changes shape.
const version :UInt32 = 5;

struct Request {
  union {
    mx @0 :Text;          # domain
    addresses @1 :Text;   # host: A and AAAA
    ptr @2 :Text;         # IP address
    a @3 :Text;           # name: A records only (DNS lists)
    txt @4 :Text;         # name: TXT records (DNS list reasons)
    ns @5 :Text;          # domain: its name servers (check_*_ns_access)
    dnsbl @6 :Text;       # name: A records with their TTL (postscreen's DNS lists)
    # DNSSEC (smtp_dns_support_level = dnssec): asked with the DO bit; an
    # answer is secure when the validating name server set AD.
    mxSec @7 :Text;       # domain: MX records and whether they are secure
    hostSec @8 :Text;     # host: A and AAAA, the name after CNAMEs, secure or not
    tlsa @9 :Text;        # _port._tcp.host: TLSA records, secure or not
    cnameSec @10 :Text;   # name: whether its own CNAME record is secure
  }
}

struct Mx {
  preference @0 :UInt16;
  exchange @1 :Text;
}

struct Listed {
  addresses @0 :List(Text); # the A records; empty: not listed
  ttl @1 :UInt32;           # seconds: the answer's TTL (the negative answer's when not listed); 0 unknown
}

struct MxSec {
  secure @0 :Bool;
  mx @1 :List(Mx);
}

struct HostSec {
  secure @0 :Bool;          # every address answer was authentic
  name @1 :Text;            # the name the addresses belong to, after CNAMEs
  addresses @2 :List(Text);
}

struct Tlsa {
  usage @0 :UInt8;          # 255: a record too large to pass on (unusable)
  selector @1 :UInt8;
  matching @2 :UInt8;
  data @3 :Data;            # at most 4096 bytes
}

struct TlsaSet {
  secure @0 :Bool;
  records @1 :List(Tlsa);   # at most 32
}

struct Reply {
  union {
    mx @0 :List(Mx);
    addresses @1 :List(Text);
    names @2 :List(Text);
    notFound @3 :Void;    # NXDOMAIN, or no records of the type
    tempfail @4 :Text;    # SERVFAIL, timeout, unreachable
    nullMx @5 :Void;      # RFC 7505: the domain accepts no mail
    texts @6 :List(Text); # txt: at most 64 records (strings joined) of at most 2048 printable bytes
    listed @7 :Listed;    # dnsbl
    mxSec @8 :MxSec;
    hostSec @9 :HostSec;
    tlsa @10 :TlsaSet;
    secureCname @11 :Bool; # cnameSec: true when the CNAME record is authentic
  }
}
