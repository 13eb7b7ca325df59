//! The one thing purposegate reads out of a certificate: its subject
//! alternative names, the URI ones (where a SPIFFE ID lives,
//! `spiffe://trust-domain/path`) and the DNS ones.
//!
//! rustls has verified the chain before this runs; this only walks the DER
//! (X.509, RFC 5280 §4.1 and §4.2.1.6) to the `subjectAltName` extension.
//! Every read is bounds-checked: a malformed certificate is an error, never
//! a panic (fuzzed by `fuzz/fuzz_targets/uri_sans.rs`).

use std::fmt;

/// A certificate this parser cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(&'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

impl std::error::Error for DerError {}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in `TBSCertificate`.
const EXTENSIONS: u8 = 0xa3;
/// `uniformResourceIdentifier [6] IMPLICIT IA5String` in `GeneralName`.
const URI_NAME: u8 = 0x86;
/// `dNSName [2] IMPLICIT IA5String` in `GeneralName`.
const DNS_NAME: u8 = 0x82;
/// 2.5.29.17, `id-ce-subjectAltName`.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One tag-length-value, and what follows it.
fn next_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, rest) = input.split_first().ok_or(DerError("truncated tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(DerError("multi-byte tags are not used in certificates"));
    }
    let (&first, rest) = rest.split_first().ok_or(DerError("truncated length"))?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return Err(DerError("length form not allowed in DER"));
        }
        let bytes = rest.get(..count).ok_or(DerError("truncated length"))?;
        let length = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (length, rest.get(count..).unwrap_or_default())
    };
    let value = rest
        .get(..length)
        .ok_or(DerError("value runs past its end"))?;
    Ok((tag, value, rest.get(length..).unwrap_or_default()))
}

/// The contents of a TLV that must carry `tag`.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DerError> {
    let (found, value, rest) = next_tlv(input)?;
    if found == tag {
        Ok((value, rest))
    } else {
        Err(DerError(what))
    }
}

/// The URI subject alternative names of a DER certificate, in order; empty
/// when it has none.
pub fn uri_sans(certificate: &[u8]) -> Result<Vec<String>, DerError> {
    sans(certificate, URI_NAME)
}

/// The DNS subject alternative names of a DER certificate, in order.
pub fn dns_sans(certificate: &[u8]) -> Result<Vec<String>, DerError> {
    sans(certificate, DNS_NAME)
}

/// The subject alternative names of one kind (the `GeneralName` tag
/// `kind`), in order.
fn sans(certificate: &[u8], kind: u8) -> Result<Vec<String>, DerError> {
    let (certificate, _) = expect(certificate, SEQUENCE, "not a SEQUENCE")?;
    let (mut tbs, _) = expect(certificate, SEQUENCE, "no TBSCertificate")?;
    while !tbs.is_empty() {
        let (tag, value, rest) = next_tlv(tbs)?;
        tbs = rest;
        if tag == EXTENSIONS {
            let (extensions, _) = expect(value, SEQUENCE, "extensions are not a SEQUENCE")?;
            return extension_names(extensions, kind);
        }
    }
    Ok(Vec::new())
}

fn extension_names(mut extensions: &[u8], kind: u8) -> Result<Vec<String>, DerError> {
    while !extensions.is_empty() {
        let (extension, rest) = expect(extensions, SEQUENCE, "extension is not a SEQUENCE")?;
        extensions = rest;
        let (id, mut fields) = expect(extension, OID, "extension has no OID")?;
        if id != SUBJECT_ALT_NAME {
            continue;
        }
        let (tag, value, rest) = next_tlv(fields)?;
        if tag == BOOLEAN {
            fields = rest;
        } else if tag == OCTET_STRING {
            return general_names(value, kind);
        }
        let (value, _) = expect(
            fields,
            OCTET_STRING,
            "extension value is not an OCTET STRING",
        )?;
        return general_names(value, kind);
    }
    Ok(Vec::new())
}

fn general_names(value: &[u8], kind: u8) -> Result<Vec<String>, DerError> {
    let (mut names, _) = expect(value, SEQUENCE, "subjectAltName is not a SEQUENCE")?;
    let mut uris = Vec::new();
    while !names.is_empty() {
        let (tag, value, rest) = next_tlv(names)?;
        names = rest;
        if tag == kind {
            if !value.is_ascii() {
                return Err(DerError("a name is not IA5 text"));
            }
            // No URI or host name holds a space or a control character:
            // one that does would reach a header the app reads, and names
            // no one here.
            if !value.iter().all(u8::is_ascii_graphic) {
                return Err(DerError("a name holds a space or a control character"));
            }
            uris.push(String::from_utf8_lossy(value).into_owned());
        }
    }
    Ok(uris)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made certificate shape: only the parts the parser walks.
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if value.len() < 0x80 {
            out.push(value.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn certificate(extensions: &[Vec<u8>]) -> Vec<u8> {
        let mut tbs = tlv(0x02, &[1]); // serial
        tbs.extend(tlv(SEQUENCE, &[])); // signature algorithm, issuer ... (shape only)
        if !extensions.is_empty() {
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, &extensions.concat())));
        }
        let mut cert = tlv(SEQUENCE, &tbs);
        cert.extend(tlv(SEQUENCE, &[])); // signatureAlgorithm
        tlv(SEQUENCE, &cert)
    }

    fn san(critical: bool, names: &[(u8, &str)]) -> Vec<u8> {
        let names: Vec<u8> = names
            .iter()
            .flat_map(|(tag, name)| tlv(*tag, name.as_bytes()))
            .collect();
        let mut ext = tlv(OID, SUBJECT_ALT_NAME);
        if critical {
            ext.extend(tlv(BOOLEAN, &[0xff]));
        }
        ext.extend(tlv(OCTET_STRING, &tlv(SEQUENCE, &names)));
        tlv(SEQUENCE, &ext)
    }

    #[test]
    fn finds_uri_names_among_other_names_and_extensions() {
        let other = tlv(
            SEQUENCE,
            &[
                tlv(OID, &[0x55, 0x1d, 0x0f]),
                tlv(OCTET_STRING, &[3, 2, 5, 160]),
            ]
            .concat(),
        );
        let cert = certificate(&[
            other,
            san(
                false,
                &[
                    (0x82, "localhost"),
                    (URI_NAME, "spiffe://example.org/billing"),
                    (URI_NAME, "urn:x"),
                ],
            ),
        ]);
        assert_eq!(
            uri_sans(&cert),
            Ok(vec![
                "spiffe://example.org/billing".to_string(),
                "urn:x".to_string()
            ])
        );
        assert_eq!(dns_sans(&cert), Ok(vec!["localhost".to_string()]));
    }

    #[test]
    fn a_name_with_a_control_character_or_space_is_an_error() {
        for name in [
            "spiffe://a/b\nx-subject: victim",
            "spiffe://a/b c",
            "spiffe://a/\u{7f}",
        ] {
            let cert = certificate(&[san(false, &[(URI_NAME, name)])]);
            assert!(uri_sans(&cert).is_err(), "{name:?}");
        }
        // Only names of the kind asked for are read.
        let cert = certificate(&[san(
            false,
            &[(0x82, "bad host"), (URI_NAME, "spiffe://a/b")],
        )]);
        assert_eq!(uri_sans(&cert), Ok(vec!["spiffe://a/b".to_string()]));
    }

    #[test]
    fn a_critical_flag_is_skipped() {
        let cert = certificate(&[san(true, &[(URI_NAME, "spiffe://a/b")])]);
        assert_eq!(uri_sans(&cert), Ok(vec!["spiffe://a/b".to_string()]));
    }

    #[test]
    fn no_extensions_or_no_uri_is_empty() {
        assert_eq!(uri_sans(&certificate(&[])), Ok(Vec::new()));
        let dns_only = certificate(&[san(false, &[(0x82, "localhost")])]);
        assert_eq!(uri_sans(&dns_only), Ok(Vec::new()));
    }

    #[test]
    fn long_values_use_the_long_length_form() {
        let long = format!("spiffe://example.org/{}", "a".repeat(300));
        let cert = certificate(&[san(false, &[(URI_NAME, &long)])]);
        assert_eq!(uri_sans(&cert), Ok(vec![long]));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let good = certificate(&[san(false, &[(URI_NAME, "spiffe://a/b")])]);
        for cut in 0..good.len() {
            assert!(
                uri_sans(good.get(..cut).unwrap_or_default()).is_err(),
                "cut at {cut}"
            );
        }
        assert!(uri_sans(&[0x30, 0x80, 0, 0]).is_err());
        assert!(uri_sans(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(uri_sans(&[0x1f, 0x01, 0x00]).is_err());
    }
}
