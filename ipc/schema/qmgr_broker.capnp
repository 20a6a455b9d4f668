@0xfe4e804149dcf290;
# qmgr -> broker: the queue manager subscribes to committed messages. The
# broker answers with every committed message it holds, then "current",
# then one event per new commit, which carries a read-only descriptor of the
# message's file beside the frame. It never waits on the queue manager.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Request {
  kind @0 :Kind;
  enum Kind {
    subscribe @0;
  }
}

struct Message {
  queueId @0 :Text;
  sender @1 :Text;
  size @2 :UInt64;
  nrcpt @3 :UInt32;
  arrivalUs @4 :UInt64;
}

struct Event {
  union {
    committed @0 :Message;  # a new commit: one descriptor beside the frame
    current @1 :Void;     # the initial snapshot is complete
  }
}
