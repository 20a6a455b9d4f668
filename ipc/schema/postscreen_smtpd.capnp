@0xec70e4dc34715bca;

# postscreen -> smtpd: a client that passed the screen. The client's
# socket goes beside the frame (SCM_RIGHTS, exactly one descriptor);
# smtpd serves it as a session of the pass service, and greets it with
# the final "220 " line (postscreen sent only "220-" lines, or nothing).

const version :UInt32 = 1;

struct Request {
  service @0 :Text;          # the smtpd pass service (smtpd_service_name), at most 64 bytes
  clientAddress @1 :Text;    # the client's IP address (a PROXY header's, behind a load balancer)
  clientPort @2 :UInt16;
  serverAddress @3 :Text;    # the address the client connected to; "" when unknown
  serverPort @4 :UInt16;
  maxWaiting @5 :UInt32;     # postscreen_post_queue_limit: refuse with busy when this many already wait for a slot; 0 = no limit
}

struct Reply {
  union {
    taken @0 :UInt32;        # smtpd owns the connection; the value: handed-off clients waiting for a session slot
    refused @1 :Text;        # no such pass service, or not a TCP socket; postscreen tells the client 421
    busy @2 :Void;           # maxWaiting clients already wait for a session slot; postscreen tells the client 421
  }
}
