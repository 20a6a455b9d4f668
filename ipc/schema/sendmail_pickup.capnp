@0x96bf2d4a13d0fc0e;
# sendmail -> pickup: one submission per connection on the public pickup
# socket, or per file in the maildrop directory (the same frames, one after
# another). sendmail runs as any local user: pickup treats every field as
# untrusted, identifies the submitter by SO_PEERCRED or the file's owner,
# and makes every permission decision itself after reading all input.

# Bump when any message in this file changes shape.
const version :UInt32 = 2;

struct Begin {
  sender @0 :Text;          # -f/-r or MAIL FROM (-bs); "" is the null sender
  senderGiven @1 :Bool;     # false: pickup derives the sender from the uid
  fullName @2 :Text;        # -F, "" if none
  extract @3 :Bool;         # -t: recipients from To/Cc/Bcc; Bcc removed
  notify @4 :UInt8;         # -N: DSN NOTIFY bits (1 success, 2 failure, 4 delay, 8 never); 0 unset
  ret @5 :UInt8;            # -R: 0 unset, 1 full, 2 hdrs
  envid @6 :Text;           # -V
  body8bit @7 :Bool;        # -B 8BITMIME, or 8-bit bytes seen
  smtputf8 @8 :Bool;        # non-ASCII addresses or headers
  trace @9 :Bool;           # -v: mail a report of the first delivery attempt
}

struct Request {
  union {
    begin @0 :Begin;                  # first, exactly once
    recipients @1 :List(Text);        # command-line recipients, at most 100 a batch
    content @2 :Data;                 # at most 64 KiB, CRLF line endings
    end @3 :Void;                     # last; answered with one Reply
  }
}

struct Reply {
  union {
    queued @0 :Text;                  # the queue id: fsynced in the queue
    failed @1 :Failure;
  }
}

struct Failure {
  exitCode @0 :UInt8;                 # a sysexits code (64..78)
  text @1 :Text;                      # for the user's terminal
}
