@0xd14a1a69a8e39f96;
# qmgr -> broker: the queue manager reads messages and records their state.
# Only the queue manager decides a message's state; the broker only makes
# it durable (group commit) and frees files whose every recipient is done.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Deferred {
  index @0 :UInt32;
  reason @1 :Text;
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
}

struct Request {
  union {
    open @0 :Text;       # queue id: a read-only descriptor of its file
    append @1 :Append;   # durable state records
    remove @2 :Text;     # queue id: every recipient is done, free the file
  }
}

struct Reply {
  union {
    opened @0 :Void;     # one descriptor beside the frame
    ok @1 :Void;
    failed @2 :Text;
  }
}
