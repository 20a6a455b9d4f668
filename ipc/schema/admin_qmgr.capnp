@0x96444293cf80ab11;
# postern queue ... -> qmgr, over a channel the master hands out through
# the control socket. Client-reachable: a violation drops only this channel.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Request {
  union {
    list @0 :Void;
    show @1 :Text;
    flush @2 :Void;
    delete @3 :List(Text);   # queue ids, or ["ALL"]
    hold @4 :List(Text);
    release @5 :List(Text);
    requeue @6 :List(Text);
  }
}

struct Rcpt {
  address @0 :Text;
  delayReason @1 :Text;
}

struct Entry {
  queueId @0 :Text;
  queueName @1 :Text;        # active | deferred | hold
  arrivalTime @2 :UInt64;    # seconds since the epoch
  messageSize @3 :UInt64;
  sender @4 :Text;
  recipients @5 :List(Rcpt);
  forcedExpire @6 :Bool;
}

struct Reply {
  union {
    entries @0 :List(Entry);  # a batch; more may follow
    content @1 :Data;         # a piece of the message (show)
    end @2 :Void;             # the listing or content is complete
    done @3 :List(Text);      # what an operation did, one line each
    error @4 :Text;
  }
}
