@0xe67c5f1c868849f8;

# smtpd, cleanup -> milter. Only the milter role talks to Milters.
#
# smtpd opens a session (its smtpd_milters, one connection each) at the
# client's connect and sends the SMTP events as they happen; the verdict
# of the session's opening carries a ticket. cleanup attaches to one
# Milter of that session by the ticket at the end of the message, sends
# it the message as queued, and gets its changes and verdict; it applies
# the changes to the queue file itself. For mail from sendmail
# (non_smtpd_milters) cleanup opens a conversation of its own with one
# Milter, which replays CONNECT, HELO and MAIL (and each RCPT).
# A channel stands for one smtpd session, or one cleanup session.

const version :UInt32 = 3;

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

struct Attach {
  ticket @0 :UInt64;        # from the session's opening
  milter @1 :Text;          # which of its Milters, as configured
}

struct Request {
  union {
    open @0 :Open;          # cleanup: connect, negotiate, CONNECT, HELO, MAIL: answered with a verdict
    rcpt @1 :Text;          # "<recipient>": answered with a verdict
    content @2 :Data;       # the queued message, in order; at most 64 KiB; no answer
    end @3 :Void;           # answered with edits, then a verdict
    session @4 :Open;       # smtpd: every smtpd Milter, CONNECT (milter and mail empty): a verdict with the ticket
    helo @5 :Text;          # smtpd: HELO or EHLO: answered with a verdict
    mail @6 :List(Text);    # smtpd: "<sender>", then ESMTP parameters (at most 16): answered with a verdict
    macros @7 :List(Macro); # smtpd: macro values for the events that follow (at most 64); no answer
    attach @8 :Attach;      # cleanup: answered with a verdict (continue: send the message)
    close @9 :Void;         # smtpd: the session is over (its Milter connections end); no
                            # answer; the channel may carry another session
  }
}

struct Verdict {
  outcome @0 :UInt8;        # 0 continue, 1 accept, 2 discard, 3 reject, 4 tempfail, 5 shutdown
  reply @1 :List(Text);     # the SMTP reply to give, one line each ("550 5.7.1 text"),
                            # none for the default text; at most 16 lines of 512 bytes
  quarantine @2 :Text;      # "" or why the Milter asked for hold, at most 1024 bytes
  failure @3 :Text;         # "" or why the Milter failed (the outcome is its default action)
  ticket @4 :UInt64;        # a session's opening: what cleanup attaches with (0 otherwise)
}

struct Reply {
  union {
    verdict @0 :Verdict;
    edit @1 :Data;          # one change, as the Milter's own packet (checked again by cleanup)
  }
}
