@0xfa691f2ac6027318;
# cleanup -> broker: queue files. The broker hands out a queue id with an
# open descriptor (SCM_RIGHTS, beside "allocated") from its spare pool, and
# makes files durable and visible on request. A channel may only commit
# or abort the ids it was given.

# Bump when any message in this file changes shape.
const version :UInt32 = 3;

struct Commit {
  queueId @0 :Text;
  sender @1 :Text;
  size @2 :UInt64;
  nrcpt @3 :UInt32;
}

struct Request {
  union {
    allocate @0 :Void;
    commit @1 :Commit;    # append the commit record, one fsync for all, make visible
    abort @2 :Text;       # queue id: back to the spare pool
  }
}

struct Reply {
  union {
    allocated @0 :Text;   # queue id; one descriptor beside the frame
    committed @1 :Void;
    aborted @2 :Void;
    failed @3 :Text;
    noSpace @4 :UInt64;   # allocate: the queue file system is full; its free bytes
  }
}
