@0xfa691f2ac6027318;
# cleanup -> broker: queue files. The broker hands out a queue id with an
# open descriptor (SCM_RIGHTS, beside "allocated") from its spare pool, and
# makes files durable and visible on request. A channel may only sync,
# commit or abort the ids it was given.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Commit {
  queueId @0 :Text;
  sender @1 :Text;
  size @2 :UInt64;
  nrcpt @3 :UInt32;
}

struct Request {
  union {
    allocate @0 :Void;
    sync @1 :Text;        # queue id: fsync what cleanup wrote (tentative)
    commit @2 :Commit;    # append the commit record, fsync, make visible
    abort @3 :Text;       # queue id: back to the spare pool
  }
}

struct Reply {
  union {
    allocated @0 :Text;   # queue id; one descriptor beside the frame
    synced @1 :Void;
    committed @2 :Void;
    aborted @3 :Void;
    failed @4 :Text;
    noSpace @5 :UInt64;   # allocate: the queue file system is full; its free bytes
  }
}
