//! smtpd and smtp -> broker: private-key operations (schema: keys.capnp).
//!
//! The broker holds every TLS private key. Network-facing daemons get the
//! certificate chain and the list of schemes the key can sign with, and send
//! each signature and session-ticket operation here. What comes back is
//! bounded and typed so that it cannot be a key: a chain whose entries the
//! receiver parses as certificates, a signature of at most
//! [`MAX_SIGNATURE`] bytes, or an encrypted ticket.
use std::os::fd::OwnedFd;

use crate::channel::{Message, no_fds};
use crate::frame::{self, Violation, clip, data, list_len, text};
use crate::generated::keys_capnp::{
    DkimAlgorithm as WireAlg, KeyRole as WireRole, dkim_key, identity, reply, request,
};

pub const EDGE: &str = "keys";
pub const VERSION: u32 = crate::generated::keys_capnp::VERSION;
crate::edge!(
    /// This edge, for `edge::open`, `edge::accept` and `edge::serve`.
    Link,
    Request,
    Reply
);

/// A TLS 1.2 ServerKeyExchange or a TLS 1.3 CertificateVerify input is a
/// few hundred bytes; 2 KiB leaves room and refuses anything else.
pub const MAX_SIGN_INPUT: usize = 2048;
/// RSA-8192 signatures are 1024 bytes; nothing we sign makes more.
pub const MAX_SIGNATURE: usize = 1024;
/// Session state that rustls puts in a ticket.
pub const MAX_TICKET_PLAIN: usize = 4096;
/// The encrypted form: state plus nonce, tag and key name.
pub const MAX_TICKET: usize = MAX_TICKET_PLAIN + 256;
pub const MAX_CHAIN: usize = 10;
/// What a DKIM signature covers: the signed header fields (cleanup caps a
/// message's headers at header_size_limit, 100 KiB by default) and the
/// DKIM-Signature field itself.
pub const MAX_DKIM_INPUT: usize = 256 * 1024;
/// Signatures made for one message (RFC 8463: RSA and Ed25519 side by side).
pub const MAX_DKIM_KEYS: usize = 8;
/// A key name, domain or selector.
pub const MAX_DKIM_NAME: usize = 255;
/// An address asked about.
pub const MAX_DKIM_ADDRESS: usize = 1024;
pub const MAX_CERT: usize = 16 * 1024;
const MAX_SCHEMES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// smtpd's server certificate.
    Server,
    /// smtp's client certificate.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Identity(KeyRole),
    Sign {
        key: KeyRole,
        scheme: u16,
        message: Vec<u8>,
    },
    TicketEncrypt(Vec<u8>),
    TicketDecrypt(Vec<u8>),
    /// Which DKIM keys sign mail from this From: address.
    DkimKeys(String),
    /// A DKIM signature by the named key over `input`.
    DkimSign {
        name: String,
        input: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

/// A DKIM key as the signer sees it: everything but the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub name: String,
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// rustls SignatureScheme values, preferred first.
    pub schemes: Vec<u16>,
    /// rustls SignatureAlgorithm value.
    pub algorithm: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Identity(Identity),
    NoKey,
    Signature(Vec<u8>),
    Ticket(Vec<u8>),
    Refused(String),
    /// The keys that sign an address's mail (none: not in the table).
    DkimKeys(Vec<DkimKey>),
    /// The signing table or a key cannot be used now: try later.
    Tempfail(String),
}

fn to_wire(k: KeyRole) -> WireRole {
    match k {
        KeyRole::Server => WireRole::Server,
        KeyRole::Client => WireRole::Client,
    }
}

fn from_wire(k: Result<WireRole, capnp::NotInSchema>) -> Result<KeyRole, Violation> {
    Ok(match k? {
        WireRole::Server => KeyRole::Server,
        WireRole::Client => KeyRole::Client,
    })
}

impl Message for Request {
    /// A DKIM signing input with room for framing.
    const MAX_FRAME: usize = MAX_DKIM_INPUT + 4096;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<request::Builder>();
            let cap = |d: &[u8], max: usize| d[..d.len().min(max)].to_vec();
            match self {
                Request::Identity(k) => r.set_identity(to_wire(*k)),
                Request::Sign {
                    key,
                    scheme,
                    message,
                } => {
                    let mut s = r.init_sign();
                    s.set_key(to_wire(*key));
                    s.set_scheme(*scheme);
                    s.set_message(&cap(message, MAX_SIGN_INPUT));
                }
                Request::TicketEncrypt(d) => r.set_ticket_encrypt(&cap(d, MAX_TICKET_PLAIN)),
                Request::TicketDecrypt(d) => r.set_ticket_decrypt(&cap(d, MAX_TICKET)),
                Request::DkimKeys(a) => r.set_dkim_keys(clip(a, MAX_DKIM_ADDRESS)),
                Request::DkimSign { name, input } => {
                    let mut s = r.init_dkim_sign();
                    s.set_name(clip(name, MAX_DKIM_NAME));
                    s.set_input(&cap(input, MAX_DKIM_INPUT));
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<request::Reader>()?;
        Ok(match r.which()? {
            request::Identity(k) => Request::Identity(from_wire(k)?),
            request::Sign(s) => Request::Sign {
                key: from_wire(s.get_key())?,
                scheme: s.get_scheme(),
                message: data(s.get_message(), "sign.message", MAX_SIGN_INPUT)?,
            },
            request::TicketEncrypt(d) => {
                Request::TicketEncrypt(data(d, "ticketEncrypt", MAX_TICKET_PLAIN)?)
            }
            request::TicketDecrypt(d) => {
                Request::TicketDecrypt(data(d, "ticketDecrypt", MAX_TICKET)?)
            }
            request::DkimKeys(a) => Request::DkimKeys(text(a, "dkimKeys", MAX_DKIM_ADDRESS)?),
            request::DkimSign(s) => Request::DkimSign {
                name: text(s.get_name(), "dkimSign.name", MAX_DKIM_NAME)?,
                input: data(s.get_input(), "dkimSign.input", MAX_DKIM_INPUT)?,
            },
        })
    }
}

impl Message for Reply {
    /// A chain of ten 16 KiB certificates, with room for framing.
    const MAX_FRAME: usize = MAX_CHAIN * (MAX_CERT + 16) + 1024;

    fn encode(&self) -> Vec<u8> {
        let mut b = frame::builder();
        {
            let mut r = b.init_root::<reply::Builder>();
            match self {
                Reply::Identity(id) => {
                    let mut i = r.init_identity();
                    let chain: Vec<&Vec<u8>> = id
                        .chain
                        .iter()
                        .filter(|c| c.len() <= MAX_CERT)
                        .take(MAX_CHAIN)
                        .collect();
                    let mut l = i.reborrow().init_chain(chain.len() as u32);
                    for (n, c) in chain.iter().enumerate() {
                        l.set(n as u32, c);
                    }
                    let schemes = &id.schemes[..id.schemes.len().min(MAX_SCHEMES)];
                    let mut s = i.reborrow().init_schemes(schemes.len() as u32);
                    for (n, v) in schemes.iter().enumerate() {
                        s.set(n as u32, *v);
                    }
                    i.set_algorithm(id.algorithm);
                }
                Reply::NoKey => r.set_no_key(()),
                Reply::Signature(s) => r.set_signature(&s[..s.len().min(MAX_SIGNATURE)]),
                Reply::Ticket(t) => r.set_ticket(&t[..t.len().min(MAX_TICKET)]),
                Reply::Refused(t) => r.set_refused(clip(t, 256)),
                Reply::Tempfail(t) => r.set_tempfail(clip(t, 512)),
                Reply::DkimKeys(keys) => {
                    let keys = &keys[..keys.len().min(MAX_DKIM_KEYS)];
                    let mut l = r.init_dkim_keys(keys.len() as u32);
                    for (n, k) in keys.iter().enumerate() {
                        let mut e = l.reborrow().get(n as u32);
                        e.set_name(clip(&k.name, MAX_DKIM_NAME));
                        e.set_domain(clip(&k.domain, MAX_DKIM_NAME));
                        e.set_selector(clip(&k.selector, MAX_DKIM_NAME));
                        e.set_algorithm(match k.algorithm {
                            DkimAlgorithm::RsaSha256 => WireAlg::RsaSha256,
                            DkimAlgorithm::Ed25519Sha256 => WireAlg::Ed25519Sha256,
                        });
                    }
                }
            }
        }
        frame::finish(&b)
    }

    fn decode(f: &[u8], fds: Vec<OwnedFd>) -> Result<Self, Violation> {
        no_fds(&fds)?;
        let msg = frame::open(f, Self::MAX_FRAME)?;
        let r = msg.get_root::<reply::Reader>()?;
        Ok(match r.which()? {
            reply::Identity(i) => Reply::Identity(identity_from(i?)?),
            reply::NoKey(()) => Reply::NoKey,
            reply::Signature(s) => Reply::Signature(data(s, "signature", MAX_SIGNATURE)?),
            reply::Ticket(t) => Reply::Ticket(data(t, "ticket", MAX_TICKET)?),
            reply::Refused(t) => Reply::Refused(text(t, "refused", 256)?),
            reply::Tempfail(t) => Reply::Tempfail(text(t, "tempfail", 512)?),
            reply::DkimKeys(l) => {
                let l = l?;
                list_len(l.len(), "dkimKeys", MAX_DKIM_KEYS)?;
                let mut keys = Vec::with_capacity(l.len() as usize);
                for k in l.iter() {
                    keys.push(dkim_key_from(k)?);
                }
                Reply::DkimKeys(keys)
            }
        })
    }
}

fn dkim_key_from(k: dkim_key::Reader<'_>) -> Result<DkimKey, Violation> {
    Ok(DkimKey {
        name: text(k.get_name(), "dkimKeys[].name", MAX_DKIM_NAME)?,
        domain: text(k.get_domain(), "dkimKeys[].domain", MAX_DKIM_NAME)?,
        selector: text(k.get_selector(), "dkimKeys[].selector", MAX_DKIM_NAME)?,
        algorithm: match k.get_algorithm()? {
            WireAlg::RsaSha256 => DkimAlgorithm::RsaSha256,
            WireAlg::Ed25519Sha256 => DkimAlgorithm::Ed25519Sha256,
        },
    })
}

fn identity_from(i: identity::Reader<'_>) -> Result<Identity, Violation> {
    let chain = i.get_chain()?;
    let n = list_len(chain.len(), "identity.chain", MAX_CHAIN)?;
    if n == 0 {
        return Err(Violation::Field {
            field: "identity.chain",
            why: "empty".into(),
        });
    }
    let mut certs = Vec::with_capacity(n);
    for c in chain.iter() {
        certs.push(data(c, "identity.chain[]", MAX_CERT)?);
    }
    let schemes = i.get_schemes()?;
    let m = list_len(schemes.len(), "identity.schemes", MAX_SCHEMES)?;
    if m == 0 {
        return Err(Violation::Field {
            field: "identity.schemes",
            why: "empty".into(),
        });
    }
    Ok(Identity {
        chain: certs,
        schemes: schemes.iter().collect(),
        algorithm: i.get_algorithm(),
    })
}
