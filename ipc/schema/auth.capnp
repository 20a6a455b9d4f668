@0xe1a7c3b5d9f20846;

# smtpd -> auth: SASL credential checks. The auth role alone reads the
# password hashes; smtpd sends what the client sent and learns only
# whether it matched.

const version :UInt32 = 1;

struct Request {
  username @0 :Text;      # as the client gave it, at most 256 bytes
  password @1 :Data;      # as the client gave it, at most 1024 bytes
  client @2 :Text;        # the client's IP address (per-client failure limits)
}

struct Reply {
  union {
    ok @0 :Text;          # the canonical user name
    failed @1 :Void;      # wrong user name or password
    locked @2 :UInt32;    # too many failures: seconds until the next try
    tempfail @3 :Text;    # the password file cannot be read
  }
}
