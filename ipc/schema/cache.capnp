@0xc3d1e9a0b4f27561;

# role -> cache: the persistent state store. Each namespace has one owner
# role, the only one that may write it (and, today, read it); the cache
# role knows the caller's role from the master, never from the message.
# Values are the owner's postcard records, opaque to the store.

const version :UInt32 = 1;

struct Put {
  value @0 :Data;           # at most the namespace's value cap (<= 4096 bytes)
  ttlSeconds @1 :UInt32;    # 1 .. 30 days; the record is gone after that
}

struct Request {
  namespace @0 :Text;       # at most 32 bytes, a known name
  entry @1 :Text;           # the record's name in the namespace, at most 512 bytes
  union {
    get @2 :Void;
    put @3 :Put;
    delete @4 :Void;
  }
}

struct Found {
  value @0 :Data;
  expiresIn @1 :UInt32;     # seconds left
}

struct Reply {
  union {
    found @0 :Found;
    notFound @1 :Void;
    done @2 :Void;          # put or delete applied
    refused @3 :Text;       # not this role's namespace, or over a cap
  }
}
