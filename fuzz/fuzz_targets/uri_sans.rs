//! The URI SANs of a client certificate, read from any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = purposegate_runtime::tls::x509::uri_sans(data);
});
