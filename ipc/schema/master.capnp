@0xb88940c69b80db67;
# The control channel between the master and each daemon (the daemon's
# --ipc-fd). The master is the switchboard: a daemon asks it for a channel to
# a peer role, and the master checks the peer graph and hands both ends out.
using Common = import "common.capnp";

# Bump when any message in this file changes shape.
const version :UInt32 = 7;

struct Listener {
  service @0 :Text;             # the master.cf service name, e.g. "127.0.0.1:2525"
  params @1 :List(Common.Param);  # the service's expanded -o overrides
  maxproc @2 :UInt32;           # master.cf maxproc ("-": default_process_limit): concurrent sessions; 0 = no limit
}

struct Setup {
  version @0 :UInt32;
  role @1 :Text;
  params @2 :List(Common.Param);  # this role's slice of the configuration
  listeners @3 :List(Listener);   # one descriptor each, in order, beside the frame
  passes @4 :List(Listener);      # smtpd: the pass services postscreen hands clients to (no descriptors)
}

struct Peer {
  requestId @0 :UInt32;         # 0 when the peer initiated (you accept it)
  peerRole @1 :Text;
}

struct ConnectFailed {
  requestId @0 :UInt32;
  reason @1 :Text;
}

# A table file the master opened read-only for the daemon; one descriptor
# beside the frame when found is true.
struct TableFile {
  requestId @0 :UInt32;
  found @1 :Bool;
  error @2 :Text;             # why it could not be opened ("" when found or absent)
}

# A file the master opened read-only for a daemon on reload; one
# descriptor beside the frame, in order, for each entry whose error is "".
struct OpenedFile {
  path @0 :Text;
  error @1 :Text;             # why it could not be opened
}

# `postern reload` for a role that keeps its process (the broker): its new
# configuration slice, and the key and certificate files it names, opened by
# the master (a jailed daemon cannot open them itself).
struct Reload {
  params @0 :List(Common.Param);
  files @1 :List(OpenedFile);
}

struct ToDaemon {
  union {
    setup @0 :Setup;
    peer @1 :Peer;              # one descriptor beside: the channel
    connectFailed @2 :ConnectFailed;
    shutdown @3 :Void;          # stop accepting work, finish, exit
    tableFile @4 :TableFile;
    ping @5 :UInt64;            # the watchdog: answer with pong, same number
    reload @6 :Reload;
  }
}

struct Ready {
  landlock @0 :Text;            # fully_enforced | partially_enforced | not_enforced
  landlockAbi @1 :UInt32;
  netns @2 :Text;               # private | shared
}

struct Connect {
  requestId @0 :UInt32;         # 1.., chosen by the daemon
  peerRole @1 :Text;
}

# Asks the master to open a table file the configuration names. The master
# refuses any path the configuration does not name. The same request
# brings smtp the connection to an LMTP Unix socket the configuration
# names, and local a user's .forward or a home_mailbox Maildir file (made
# in tmp/ for NAME, moved into new/ when asked for new/NAME), each checked
# by the master (daemons/src/master/home.rs).
struct OpenTable {
  requestId @0 :UInt32;
  path @1 :Text;
}

# Client connections (SMTP, or sendmail submissions to pickup), for the
# crash-rate throttle. Sent at once when the first connection opens, so the
# master always knows one is open; otherwise gathered for up to a second.
struct Connections {
  opened @0 :UInt32;          # accepted since the last report
  open @1 :UInt32;            # open now
}

struct FromDaemon {
  union {
    ready @0 :Ready;
    connect @1 :Connect;
    connections @2 :Connections;
    openTable @3 :OpenTable;
    pong @4 :UInt64;            # the answer to ping
  }
}
