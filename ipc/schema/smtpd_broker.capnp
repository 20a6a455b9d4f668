@0xf96c7a472538468f;
# smtpd and smtp -> broker: table lookups daemons cannot do from their
# jails (they have no filesystem at all). Read-only answers, no side
# effects. The broker answers each role only from the tables it needs.

# Bump when any message in this file changes shape.
const version :UInt32 = 6;

enum Table {
  senderLogin @0;              # smtpd_sender_login_maps (smtpd)
  saslPassword @1;             # smtp_sasl_password_maps (smtp)
  relayRecipient @2;           # relay_recipient_maps (smtpd)
  virtualAlias @3;             # virtual_alias_maps: the query is a whole
                               # address, looked up as Postfix does (smtpd)
  virtualAliasDomain @4;       # virtual_alias_domains: found or not (smtpd)
  virtualMailbox @5;           # virtual_mailbox_maps, as virtualAlias (smtpd)
  virtualMailboxDomain @6;     # virtual_mailbox_domains (smtpd)
  generic @7;                  # smtp_generic_maps: the query is an address; the
                               # value is the one it becomes (smtp)
  tlsPolicy @8;                # smtp_tls_policy_maps: next hop -> TLS policy (smtp)
  lmtpTlsPolicy @9;            # lmtp_tls_policy_maps: LMTP next hop -> TLS policy (smtp)
}

struct Request {
  union {
    localRecipient @0 :Text;   # local part: is it a local user or alias? (smtpd)
    lookup :group {
      table @1 :Table;
      query @2 :Text;          # the lookup key, at most 512 bytes
    }
    access :group {            # an access map of smtpd's restrictions (smtpd)
      map @3 :Text;            # the table as named in the restriction, at most 512 bytes
      candidates @4 :List(Text); # at most 32 lookup strings of at most 512 bytes: the
                               # first is the full key, the rest partial keys
                               # that pattern tables (cidr, regexp, pcre,
                               # tcp, socketmap) are not asked
    }
  }
}

struct Reply {
  union {
    found @0 :Bool;            # localRecipient; lookup: false when not found
    tempfail @1 :Text;         # the table could not be read
    value @2 :Text;            # lookup: the value, at most 1024 bytes
    hit :group {               # access: the first key found, and its value
      index @3 :UInt32;
      result @4 :Text;         # at most 1024 bytes
    }
  }
}
