@0xcd56364b5760b1a9;
# The control socket: `postern` commands to the master. Reachable by local
# admins, so a bad frame drops only that connection.

# Bump when any message in this file changes shape.
const version :UInt32 = 4;

struct Request {
  version @0 :UInt32;
  union {
    status @1 :Void;
    stop @2 :Void;
    reload @3 :Text;            # a service (role) name, or "" for all
    queue @4 :Void;             # a channel to the queue manager
    tables @5 :Void;            # a channel to the broker for table lookups (proxymap.capnp)
  }
}

struct ProcessInfo {
  role @0 :Text;
  pid @1 :UInt32;
  uid @2 :UInt32;
  gid @3 :UInt32;
  noNewPrivs @4 :Bool;
  seccomp @5 :UInt32;           # 0 off, 1 strict, 2 filter
  capEff @6 :Text;              # 16 hex digits, as /proc prints them
  landlock @7 :Text;
  netns @8 :Text;
  state @9 :Text;               # starting | running | throttled | stopping
  restarts @10 :UInt32;
  nofile @11 :UInt64;           # its soft RLIMIT_NOFILE (0: not running)
}

struct Reply {
  union {
    ok @0 :Text;
    error @1 :Text;
    status @2 :List(ProcessInfo);
    channel @3 :Void;           # one descriptor beside the frame
  }
}
