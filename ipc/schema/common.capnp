@0xc5a056ed67b0c97d;
# Types shared by several edges. Every Text field is checked on decode:
# valid UTF-8, no control characters, and a per-field length cap.

struct Param {
  name @0 :Text;
  value @1 :Text;
}

# First frame on every channel between two daemons, client to server; the
# server answers with a HelloReply. A mismatch closes the channel.
struct Hello {
  edge @0 :Text;
  version @1 :UInt32;
}

struct HelloReply {
  ok @0 :Bool;
  version @1 :UInt32;
}
