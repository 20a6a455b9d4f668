@0xd0887bf38eecbe50;
# smtpd -> cleanup: one mail transaction per channel at a time. smtpd never
# sees a queue file: cleanup gets the file from the broker.

# Bump when any message in this file changes shape.
const version :UInt32 = 10;

struct Client {
  name @0 :Text;          # reverse name, or "unknown"
  addr @1 :Text;          # IP address as text
  port @2 :UInt16;
  helo @3 :Text;
  proto @4 :Text;         # SMTP | ESMTP | UTF8SMTP | UTF8ESMTP ...
  logName @5 :Text;       # syslog_name of the listener, for cleanup's log lines
  tls @6 :Text;           # "" or the TLS summary for the Received header
  localUid @7 :Int64 = -1; # pickup: the submitter's uid; -1 otherwise
}

struct Recipient {
  address @0 :Text;
  orcpt @1 :Text;         # DSN ORCPT, "" if none
  notify @2 :UInt8;       # DSN NOTIFY bits: 1 success, 2 failure, 4 delay, 8 never
}

struct Begin {
  client @0 :Client;
  sender @1 :Text;        # "" for the null sender
  ret @2 :UInt8;          # DSN RET: 0 unset, 1 FULL, 2 HDRS
  envid @3 :Text;
  smtputf8 @4 :Bool;
  body8bit @5 :Bool;
  trace @6 :Bool;         # sendmail -v: report the first delivery attempt
  remoteHeaders @7 :Bool; # a client local_header_rewrite_clients does not
                          # name: header addresses are not rewritten (only
                          # qualified with remote_header_rewrite_domain)
  milterTicket @8 :UInt64;  # smtpd's Milter session (0: none): cleanup attaches
                          # to it for the content of the message
  signable @9 :Bool;      # a source whose mail may be DKIM-signed: mynetworks,
                          # a SASL login, sendmail, Postern's own notices
  requiretls @10 :Bool;   # MAIL FROM ... REQUIRETLS (RFC 8689)
}

# What smtpd's access tables asked for besides accepting (Postfix's HOLD,
# REDIRECT, BCC and PREPEND actions). Sent before recipients (prepend is
# honoured only before the first content) and again before end; cleanup
# merges them.
struct Effects {
  hold @0 :Bool;                  # commit on hold
  redirect @1 :Text;              # "" or the one recipient instead of all, at most 512 bytes
  bcc @2 :List(Text);             # at most 16 extra recipients of at most 512 bytes
  prepend @3 :List(Text);         # at most 16 "Name: value" header lines of at most 998 bytes
}

struct Request {
  union {
    begin @0 :Begin;                  # answered with begun or failed
    recipients @1 :List(Recipient);   # no answer; a batch of at most 100
    content @2 :Data;                 # no answer; at most 64 KiB
    end @3 :Void;                     # answered with committed or failed
    abort @4 :Void;                   # answered with aborted
    effects @5 :Effects;              # no answer
  }
}

struct Failure {
  code @0 :UInt16;
  enhanced @1 :Text;
  text @2 :Text;
}

struct Reply {
  union {
    begun @0 :Text;                   # the queue id
    committed @1 :Void;               # durable and visible to the queue manager
    failed @2 :Failure;
    aborted @3 :Void;
  }
}
