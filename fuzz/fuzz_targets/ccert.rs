//! A client certificate as smtpd's checks read it (public key and
//! CommonName), and the key kind of a certificate or raw public key.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    postern_proto::fuzzing::ccert(data);
});
