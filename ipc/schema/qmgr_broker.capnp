@0xfe4e804149dcf290;
# qmgr -> broker: the feed of the active set. The queue manager subscribes
# with the size of its active set (qmgr_message_active_limit and
# qmgr_message_recipient_limit). The broker keeps the order of the whole
# queue (new mail by arrival, deferred mail by its next attempt) and sends
# one event per message that enters the active set, while the set has room.
# A message leaves the set when the queue manager removes it or gives it
# back (qmgr_queue.capnp). The broker never waits on the queue manager, and
# never sends more than the set has room for.

# Bump when any message in this file changes shape.
const version :UInt32 = 3;

struct Limits {
  messages @0 :UInt32;
  recipients @1 :UInt32;
}

struct Request {
  subscribe @0 :Limits;    # the only request, once, first
}

struct Recipient {
  address @0 :Text;
  orcpt @1 :Text;
  notify @2 :UInt8;
}

# The envelope of a fresh commit, which the broker has just decoded: nothing
# is delivered or deferred yet. Absent for mail that waited (the queue
# manager reads the file) and for an envelope too large for a frame.
struct Envelope {
  sender @0 :Text;
  envid @1 :Text;
  ret @2 :UInt8;
  smtputf8 @3 :Bool;
  body8bit @4 :Bool;
  trace @5 :Bool;              # sendmail -v asked for a delivery report
  recipients @6 :List(Recipient);
}

struct Message {
  queueId @0 :Text;
  arrivalUs @1 :UInt64;
  size @2 :UInt64;
  nrcpt @3 :UInt32;
  envelope @4 :Envelope;
  hasEnvelope @5 :Bool;
  dueUs @6 :UInt64;            # the time it was due: 0 when due at once
                               # (new, flushed, released); before its next
                               # attempt only for a delay warning
}

struct Event {
  message @0 :Message;     # enters the active set; at most one descriptor beside
}
