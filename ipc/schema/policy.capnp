@0x8f498b44b478b674;

# smtpd -> policy: one request of Postfix's policy delegation protocol
# (SMTPD_POLICY_README) for a configured policy service. Only the policy
# role talks to policy servers; smtpd gets no network access for it. A
# channel stands for one smtpd session: the policy role keeps that
# channel's connections to the servers for it, as Postfix's smtpd keeps
# its own.

const version :UInt32 = 1;

struct Attr {
  name @0 :Text;            # lower-case letters, digits and "_", at most 64 bytes
  value @1 :Text;           # at most 2048 bytes, no control characters
}

struct Request {
  service @0 :Text;         # the service's key (postern_policy_services), at most 1024 bytes
  attrs @1 :List(Attr);     # at most 64
}

struct Reply {
  union {
    action @0 :Text;        # the server's action, at most 8192 bytes
    failed @1 :Text;        # why no action came, after every try; at most 512 bytes
  }
}
