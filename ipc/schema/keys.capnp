@0xb4c1f0a3d2e59a71;

# smtpd and smtp -> broker: private-key operations. The broker alone holds
# the TLS private keys and the session-ticket keys; network-facing daemons
# get the public certificate chain and ask the broker to sign.
#
# No field here can carry a private key to a network-facing process: the
# broker's replies are a certificate chain (each entry parsed as an X.509
# certificate on receipt), a signature (at most 1024 bytes, checked against
# the scheme's size), or a session ticket (encrypted by the broker). The
# test `keys_schema_carries_no_key_material` pins this schema's fields.

const version :UInt32 = 2;

enum KeyRole {
  server @0;     # smtpd's certificate (smtpd_tls_cert_file, _chain_files)
  client @1;     # smtp's client certificate (smtp_tls_cert_file)
}

struct Request {
  union {
    identity @0 :KeyRole;             # which chain and schemes?
    sign :group {
      key @1 :KeyRole;
      scheme @2 :UInt16;              # a rustls SignatureScheme the key supports
      message @3 :Data;               # at most 2048 bytes
    }
    ticketEncrypt @4 :Data;           # session state, at most 4096 bytes (smtpd only)
    ticketDecrypt @5 :Data;           # a ticket, at most 4352 bytes (smtpd only)
    dkimKeys @6 :Text;                # a From: address: which DKIM keys sign its mail? (smtp only)
    dkimSign :group {                 # smtp only
      name @7 :Text;                  # a key named in the dkimKeys reply
      input @8 :Data;                 # the canonicalized signed headers and the
                                      # DKIM-Signature header without b=, at most 256 KiB
    }
  }
}

enum DkimAlgorithm {
  rsaSha256 @0;
  ed25519Sha256 @1;
}

struct DkimKey {
  name @0 :Text;                      # the key table's name, at most 255 bytes
  domain @1 :Text;                    # d=, at most 255 bytes
  selector @2 :Text;                  # s=, at most 255 bytes
  algorithm @3 :DkimAlgorithm;
}

struct Identity {
  chain @0 :List(Data);               # DER certificates, leaf first; at most 10 of 16 KiB
  schemes @1 :List(UInt16);           # signature schemes the key can make, preferred first
  algorithm @2 :UInt8;                # rustls SignatureAlgorithm of the key
}

struct Reply {
  union {
    identity @0 :Identity;
    noKey @1 :Void;                   # no such key is configured
    signature @2 :Data;               # at most 1024 bytes
    ticket @3 :Data;                  # encrypted or decrypted ticket
    refused @4 :Text;                 # unsupported scheme, rate limit, bad ticket
    dkimKeys @5 :List(DkimKey);       # at most 8; empty: the address is not in the signing table
    tempfail @6 :Text;                # the signing table or a key cannot be used now
  }
}
