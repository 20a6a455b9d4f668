@0xb983ec28140eb30c;
# qmgr -> bounce: build a delivery status notification (RFC 3464) and queue
# it through cleanup. The original queue file comes as a read-only
# descriptor beside the request, for its headers (and content with RET=FULL).

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

enum Kind {
  failure @0;
  delay @1;
  success @2;
  trace @3;     # sendmail -v: the first attempt of every recipient
}

struct Rcpt {
  address @0 :Text;
  orcpt @1 :Text;
  dsn @2 :Text;
  text @3 :Text;
  remoteMta @4 :Text;
}

struct Request {
  queueId @0 :Text;
  sender @1 :Text;
  envid @2 :Text;
  ret @3 :UInt8;
  kind @4 :Kind;
  arrivalUs @5 :UInt64;
  recipients @6 :List(Rcpt);
}

struct Reply {
  union {
    queued @0 :Text;     # the notice's queue id
    dropped @1 :Text;    # why no notice was sent (a bounce never bounces)
    failed @2 :Text;
  }
}
