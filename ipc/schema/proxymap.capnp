@0xaaac17676b6a43f6;

# broker, qmgr, local, pickup -> proxymap: lookups in the external tables
# (tcp:, socketmap:) that the configuration names. Only proxymap talks to
# the table servers; the asking daemon never gets network access for it.

const version :UInt32 = 1;

struct Request {
  table @0 :Text;           # the table as configured, e.g. "tcp:127.0.0.1:10001"
  query @1 :Text;           # the key, at most 4096 bytes
}

struct Reply {
  union {
    found @0 :Text;         # the value, at most 100000 bytes
    notFound @1 :Void;
    failed @2 :Text;        # a lookup error: the server said so, or it failed
  }
}
