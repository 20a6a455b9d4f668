@0xf96c7a472538468f;
# smtpd and smtp -> broker: table lookups daemons cannot do from their
# jails (they have no filesystem at all). Read-only answers, no side
# effects. The broker answers each role only from the tables it needs.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

enum Table {
  senderLogin @0;              # smtpd_sender_login_maps (smtpd)
  saslPassword @1;             # smtp_sasl_password_maps (smtp)
}

struct Request {
  union {
    localRecipient @0 :Text;   # local part: is it a local user or alias? (smtpd)
    lookup :group {
      table @1 :Table;
      query @2 :Text;          # the lookup key, at most 512 bytes
    }
  }
}

struct Reply {
  union {
    found @0 :Bool;            # localRecipient; lookup: false when not found
    tempfail @1 :Text;         # the table could not be read
    value @2 :Text;            # lookup: the value, at most 1024 bytes
  }
}
