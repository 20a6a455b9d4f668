@0xf96c7a472538468f;
# smtpd -> broker: table lookups smtpd cannot do from its jail (it has no
# filesystem at all). Read-only answers, no side effects.

# Bump when any message in this file changes shape.
const version :UInt32 = 1;

struct Request {
  localRecipient @0 :Text;     # local part: is it a local user or alias?
}

struct Reply {
  union {
    found @0 :Bool;
    tempfail @1 :Text;         # the table could not be read
  }
}
