@0xe51cd854b9ecfe10;

# every role -> metrics (and the master, over a channel it makes itself):
# the figures a process keeps, for the Prometheus endpoint. Each report is
# the process's whole current state (counters since the process started,
# gauges as they are now), so a lost report costs nothing and a restarted
# process starts from zero. The metrics role checks every series against
# its catalogue: a name it does not know, a wrong number of labels, or a
# family this role may not report is a protocol violation.

const version :UInt32 = 1;

struct Sample {
  name @0 :Text;             # the series name, e.g. postern_rejects_total or postern_delivery_latency_seconds_bucket; at most 64 bytes
  labels @1 :List(Text);     # label values, in the catalogue's order (a histogram bucket adds "le" last); at most 8, 128 bytes each
  value @2 :Float64;         # finite; counters never negative
}

struct Request {
  samples @0 :List(Sample);  # at most 2048, in a frame of at most 512 KiB
}

struct Reply {
  accepted @0 :UInt32;       # how many samples were kept
}
