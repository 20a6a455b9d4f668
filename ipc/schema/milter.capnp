@0xe67c5f1c868849f8;

# cleanup -> milter: one conversation with one configured Milter about one
# message (smtpd_milters for mail from SMTP clients, non_smtpd_milters for
# mail from sendmail). Only the milter role talks to Milters; cleanup
# drives the conversation and applies the Milter's changes to the queue
# file itself. A channel stands for one cleanup session; a new open ends
# the conversation before it.

const version :UInt32 = 1;

struct Macro {
  name @0 :Text;            # at most 64 bytes
  value @1 :Text;           # at most 1024 bytes
}

struct Open {
  milter @0 :Text;          # the entry as configured, at most 1024 bytes
  macros @1 :List(Macro);   # the values cleanup knows, at most 64
  host @2 :Text;            # the client's name ("localhost" for sendmail)
  addr @3 :Text;            # the client's address, "" for sendmail
  port @4 :UInt16;
  helo @5 :Text;
  mail @6 :List(Text);      # "<sender>", then ESMTP parameters; at most 16
}

struct Request {
  union {
    open @0 :Open;          # connect, negotiate, CONNECT, HELO, MAIL: answered with a verdict
    rcpt @1 :Text;          # "<recipient>": answered with a verdict
    content @2 :Data;       # the queued message, in order; at most 64 KiB; no answer
    end @3 :Void;           # answered with edits, then a verdict
  }
}

struct Verdict {
  outcome @0 :UInt8;        # 0 continue, 1 accept, 2 discard, 3 reject, 4 tempfail, 5 shutdown
  reply @1 :List(Text);     # the SMTP reply to give, one line each ("550 5.7.1 text"),
                            # none for the default text; at most 16 lines of 512 bytes
  quarantine @2 :Text;      # "" or why the Milter asked for hold, at most 1024 bytes
  failure @3 :Text;         # "" or why the Milter failed (the outcome is its default action)
}

struct Reply {
  union {
    verdict @0 :Verdict;
    edit @1 :Data;          # one change, as the Milter's own packet (checked again by cleanup)
  }
}
