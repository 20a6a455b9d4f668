@0xd14a1a69a8e39f96;
# qmgr -> broker: the queue manager reads messages and records their state.
# Only the queue manager decides a message's state; the broker only makes
# it durable (group commit), frees files whose every recipient is done, and
# keeps the order of the messages outside the active set.

# Bump when any message in this file changes shape.
const version :UInt32 = 3;

struct Deferred {
  index @0 :UInt32;
  reason @1 :Text;
  dsn @2 :Text;              # RFC 3463 status, e.g. 4.4.1
}

struct Attempt {
  atUs @0 :UInt64;
  attempts @1 :UInt32;
}

struct State {
  union {
    rcptDone @0 :UInt32;
    rcptDeferred @1 :Deferred;
    nextAttempt @2 :Attempt;
    hold @3 :Bool;
    delayWarned @4 :Void;
    traceSent @5 :Void;       # the sendmail -v report was queued
  }
}

struct Append {
  queueId @0 :Text;
  states @1 :List(State);
  giveBack @2 :Bool;         # the message leaves the active set ...
  dueUs @3 :UInt64;          # ... and is offered again from this time on
}

struct Request {
  union {
    open @0 :Text;       # queue id: a read-only descriptor of its file
    append @1 :Append;   # durable state records
    remove @2 :Text;     # queue id: every recipient is done, free the file
    wake @3 :Text;       # queue id outside the active set: due now
    flush @4 :Void;      # every deferred message: due now
    list @5 :UInt32;     # messages outside the active set, from this cursor
  }
}

enum Place {
  incoming @0;
  deferred @1;
  hold @2;
  active @3;
}

struct Listed {
  queueId @0 :Text;
  place @1 :Place;
  dueUs @2 :UInt64;
}

struct Listing {
  entries @0 :List(Listed);
  next @1 :UInt32;           # the cursor for the next page; 0 at the end
}

struct Reply {
  union {
    opened @0 :Void;     # one descriptor beside the frame
    ok @1 :Void;
    failed @2 :Text;
    listed @3 :Listing;
  }
}
