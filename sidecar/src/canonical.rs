//! One canonical request path: what the routes judge is what the app gets.
//!
//! Web frameworks decode and normalise paths before they route (`%2e%2e`
//! becomes `..`, `/a/../b` becomes `/b`, `//` becomes `/`). A sidecar that
//! matched the raw path would judge one resource and let the app serve
//! another (the class of Envoy CVE-2019-9901). So the path is normalised as
//! RFC 3986 section 6 says, the few forms no normalisation can make
//! unambiguous are refused, and the normalised path is both the one the
//! routes match and the one forwarded.
//!
//! Envoy's `normalize_path: true`, `merge_slashes: true` and
//! `path_with_escaped_slashes_action: REJECT_REQUEST` are the reference;
//! this is stricter where apps disagree with each other:
//!
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded;
//!   every other escape is kept, its hex in upper case.
//! - Refused: an encoded `/` or `\` (apps split on them or not), a
//!   backslash (IIS and others treat it as `/`), an encoded control
//!   character (`%00`..`%1F`, `%7F`), a double escape (`%25` followed by two
//!   hex digits, which apps that decode twice read as an escape), escaped
//!   bytes that are not UTF-8 (overlong `.`), a `%` without two hex digits,
//!   and `;` in any form (Tomcat, Jetty and Spring drop `;parameters` from
//!   segments, so `/records;x/1` would be judged as one path and served as
//!   `/records/1`; Spring Security's firewall refuses it for the same
//!   reason).
//! - Repeated slashes are merged, then `.` and `..` segments removed; a
//!   `..` that would climb above the root is refused.

use std::borrow::Cow;
use std::fmt;

/// Longest request path the sidecar reads; a longer one is refused.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why a path is refused: no normalisation makes it mean one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousPath {
    pub problem: &'static str,
}

impl fmt::Display for AmbiguousPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request path {}; such paths are refused because apps read them differently",
            self.problem
        )
    }
}

impl std::error::Error for AmbiguousPath {}

fn refuse(problem: &'static str) -> AmbiguousPath {
    AmbiguousPath { problem }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical form of `raw`, a request path without its query:
/// borrowed when `raw` is canonical already (as nearly every path is).
pub fn path(raw: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(refuse("is longer than 8 KiB"));
    }
    if !raw.starts_with('/') {
        return Err(refuse("does not start with `/`"));
    }
    if canonical_already(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw.as_bytes())?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// Whether `raw` (which starts with `/`) is its own canonical form, as
/// nearly every path a client sends is: no escape, no byte the full
/// reading refuses, no empty segment but a last one, no dot segment. The
/// full reading costs a few thousand instructions a call; this, a pass.
fn canonical_already(raw: &str) -> bool {
    // The segment being read: its length, and how many of its bytes are
    // dots (a segment of one or two bytes, all dots, is a dot segment).
    let (mut length, mut dots) = (0usize, 0usize);
    let dot_segment = |length: usize, dots: usize| length > 0 && length <= 2 && dots == length;
    for &b in raw.as_bytes().iter().skip(1) {
        match BYTE_CLASS.get(usize::from(b)) {
            Some(&ORDINARY) => length += 1,
            Some(&DOT) => (length, dots) = (length + 1, dots + 1),
            Some(&SLASH) => {
                // A segment ended that is not the last: neither empty nor
                // a dot segment.
                if length == 0 || dot_segment(length, dots) {
                    return false;
                }
                (length, dots) = (0, 0);
            }
            _ => return false,
        }
    }
    // The last segment may be empty (a trailing slash), not a dot segment.
    !dot_segment(length, dots)
}

/// What each byte is to [`canonical_already`]: one lookup a byte.
const ORDINARY: u8 = 0;
const DOT: u8 = 1;
const SLASH: u8 = 2;
/// An escape, a `\\`, a `;` or a control byte: only the full reading
/// reads it.
const NOT_AS_IS: u8 = 3;
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build"
)]
const BYTE_CLASS: [u8; 256] = {
    let mut class = [ORDINARY; 256];
    let mut b: u8 = 0;
    loop {
        let this = match b {
            b'.' => DOT,
            b'/' => SLASH,
            b'%' | b'\\' | b';' => NOT_AS_IS,
            byte if byte.is_ascii_control() => NOT_AS_IS,
            _ => ORDINARY,
        };
        class[b as usize] = this;
        if b == u8::MAX {
            break class;
        }
        b += 1;
    }
};

/// Decodes escapes of unreserved characters, upper-cases the others, and
/// refuses what stays ambiguous.
fn decode_unreserved(raw: &[u8]) -> Result<String, AmbiguousPath> {
    let mut out = String::with_capacity(raw.len());
    // The bytes of a run of consecutive escapes that were kept, to check
    // they decode to UTF-8 (no overlong `.`).
    let mut escaped_run: Vec<u8> = Vec::new();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let value = match (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(h), Some(l)) => h * 16 + l,
                _ => return Err(refuse("has a `%` not followed by two hex digits")),
            };
            i += 3;
            match value {
                b'/' => return Err(refuse("has an encoded `/` (`%2F`)")),
                b'\\' => return Err(refuse("has an encoded `\\` (`%5C`)")),
                b';' => return Err(refuse("has an encoded `;` (`%3B`)")),
                0x00..=0x1f | 0x7f => {
                    return Err(refuse("has an encoded control character (e.g. `%00`)"));
                }
                v if is_unreserved(v) => {
                    check_utf8(&mut escaped_run)?;
                    out.push(char::from(v));
                }
                v => {
                    escaped_run.push(v);
                    out.push_str(&format!("%{v:02X}"));
                }
            }
            continue;
        }
        check_utf8(&mut escaped_run)?;
        if b == b'\\' {
            return Err(refuse("has a backslash"));
        }
        if b == b';' {
            return Err(refuse("has a `;` (path parameters)"));
        }
        if b.is_ascii_control() {
            return Err(refuse("has a control character"));
        }
        // Multi-byte characters pass whole: copy up to the next ASCII byte.
        let end = raw
            .get(i + 1..)
            .and_then(|rest| rest.iter().position(u8::is_ascii))
            .map_or(raw.len(), |p| i + 1 + p);
        let chunk = raw.get(i..end).unwrap_or_default();
        out.push_str(std::str::from_utf8(chunk).map_err(|_| refuse("is not UTF-8"))?);
        i = end;
    }
    check_utf8(&mut escaped_run)?;
    // Judged on the result, where `%` only ever starts a kept escape: an
    // app that decodes twice would read `%2541` as `A`.
    let twice = out.as_bytes().windows(5).any(|w| {
        w.starts_with(b"%25")
            && w.get(3).copied().and_then(hex_value).is_some()
            && w.get(4).copied().and_then(hex_value).is_some()
    });
    if twice {
        return Err(refuse("is percent-encoded twice (`%25` and hex digits)"));
    }
    Ok(out)
}

fn check_utf8(run: &mut Vec<u8>) -> Result<(), AmbiguousPath> {
    if !run.is_empty() {
        if std::str::from_utf8(run).is_err() {
            return Err(refuse("has percent-encoded bytes that are not UTF-8"));
        }
        run.clear();
    }
    Ok(())
}

/// Merges repeated slashes and removes `.` and `..` segments.
fn remove_dot_segments(path: &str) -> Result<String, AmbiguousPath> {
    let mut segments: Vec<&str> = Vec::new();
    // Whether the result ends in `/`: the input did, or its last segment
    // was a dot segment (`/a/b/..` is `/a/`).
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or(segment);
        if bare != segment && (bare == "." || bare == "..") {
            return Err(refuse("has a dot segment with parameters (`..;`)"));
        }
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(refuse("climbs above the root with `..`"));
                }
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The request target the app receives: the canonical `path` the routes
/// judged and the query as the caller sent it.
pub fn request_target(path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

/// The method-override parameter a query names, if any, in every
/// spelling a framework reads as one: Rails, Laravel, Symfony, Spring and
/// Jersey read `_method`; some read the override headers' names as
/// parameters too. A key is read as the framework would: `+` as a space,
/// percent-decoded (twice, for apps that decode twice), then as PHP names
/// variables (leading spaces dropped, `.`, ` ` and `[` as `_`, an array
/// suffix `[...]` cut), `-` and `_` alike, any case. Pairs split on `&`
/// and `;` (which some servers also take as a separator).
pub fn query_overrides_method(query: &str) -> Option<String> {
    const NAMES: [&str; 4] = [
        "_method",
        "x_http_method_override",
        "x_http_method",
        "x_method_override",
    ];
    query.split(['&', ';']).find_map(|pair| {
        let raw = pair.split('=').next().unwrap_or("");
        let decoded = decoded_key(raw);
        // PHP ends a name at a NUL byte.
        let decoded = decoded.split('\0').next().unwrap_or("").to_string();
        // PHP drops leading spaces; others read them as `_`: either way.
        [decoded.trim_start_matches(' '), decoded.as_str()]
            .into_iter()
            .map(framework_key)
            .any(|key| NAMES.iter().any(|name| key.eq_ignore_ascii_case(name)))
            .then(|| raw.to_string())
    })
}

/// A query key decoded as a framework would: `+` as a space,
/// percent-decoded twice.
fn decoded_key(raw: &str) -> String {
    let mut key = raw.replace('+', " ");
    for _ in 0..2 {
        let decoded = percent_decode_lossy(&key);
        if decoded == key {
            break;
        }
        key = decoded;
    }
    key
}

/// A decoded query key as a framework names the parameter.
fn framework_key(key: &str) -> String {
    // `a[b]` is the array `a`; an unmatched `[` is read as `_`.
    let key = match key.find('[') {
        Some(open) if key.get(open..).is_some_and(|rest| rest.contains(']')) => {
            key.get(..open).unwrap_or(key)
        }
        _ => key,
    };
    key.chars()
        .map(|c| match c {
            '.' | ' ' | '[' | '-' => '_',
            c => c,
        })
        .collect()
}

/// `%XX` decoded once; bytes that are not UTF-8 replaced.
fn percent_decode_lossy(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = match (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(h), Some(l)) if b == b'%' => Some(h * 16 + l),
            _ => None,
        };
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a canonical path has the shape of a gRPC method,
/// `/package.Service/Method`: two segments of identifier characters, the
/// first with at least one dot. With more after it (`/a.B/Get/`,
/// `/a.B/Get/x`), it is still a method's path to every table: no HTTP
/// route may judge what a gRPC server could take as a method (and then
/// no gRPC route covers it, so it is denied).
pub fn is_grpc_method(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = match rest.match_indices('/').nth(1) {
        Some((second_slash, _)) => rest.get(..second_slash).unwrap_or(rest),
        None => rest,
    };
    let Some((service, method)) = rest.split_once('/') else {
        return false;
    };
    let ident = |s: &str| {
        s.as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    service.contains('.') && service.split('.').all(ident) && ident(method)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The shortcut for paths that are canonical already answers as
        /// the full reading does, whatever the path.
        #[test]
        fn the_shortcut_reads_as_the_full_reading(
            pieces in proptest::collection::vec(
                prop::sample::select(vec![
                    "/", "/", "a", "Z", "0", ".", "..", "%", "2", "f", "F", "41", "%2e",
                    "%2F", "%25", ";", "\\", "\u{e9}", " ", "\u{7f}", "\t", "-", "~", "?", "*",
                ]),
                0..12,
            )
        ) {
            let raw = format!("/{}", pieces.concat());
            let full = decode_unreserved(raw.as_bytes()).and_then(|d| remove_dot_segments(&d));
            if canonical_already(&raw) {
                prop_assert_eq!(full.as_deref(), Ok(raw.as_str()));
            }
            // Borrowed exactly when the path came canonical.
            let read = path(&raw);
            prop_assert_eq!(
                matches!(read, Ok(Cow::Borrowed(_))),
                canonical_already(&raw)
            );
            prop_assert_eq!(read.map(Cow::into_owned), full);
        }
    }

    fn ok(raw: &str) -> String {
        path(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .into_owned()
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_resolved() {
        assert_eq!(ok("/records/../secrets/1"), "/secrets/1");
        assert_eq!(ok("/records/%2e%2e/secrets/1"), "/secrets/1");
        assert_eq!(ok("/records/%2E%2E/secrets/1"), "/secrets/1");
        assert_eq!(ok("/records//..//secrets/1"), "/secrets/1");
        assert_eq!(ok("/records/./1"), "/records/1");
        assert_eq!(ok("//records///1"), "/records/1");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/b/."), "/a/b/");
        assert_eq!(ok("/a/b/"), "/a/b/");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/.."), "/");
        assert_eq!(ok("/.../x"), "/.../x");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_the_rest_kept_in_upper_case() {
        assert_eq!(ok("/cust%6Fmers/c%2d1"), "/customers/c-1");
        assert_eq!(ok("/a%20b/%c3%bc"), "/a%20b/%C3%BC");
        assert_eq!(ok("/q%3fx"), "/q%3Fx");
        assert_eq!(ok("/caf\u{e9}"), "/caf\u{e9}");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/records/%2E%2E%2Fsecrets%2F1",
            "/records/..%2fsecrets/1",
            "/records/..%5csecrets/1",
            "/records/..\\secrets/1",
            "/records/%00",
            "/records/%0a",
            "/records/%7f",
            "/records/%252e%252e/secrets",
            "/records/%25%32%65",
            "/x/%25%380",
            "/records/%zz",
            "/records/%2",
            "/records/..;/secrets",
            "/records/.;x/secrets",
            "/records/%2e%2e;/secrets",
            "/records;x/1",
            "/records/1;jsessionid=2",
            "/records%3bx/1",
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "/records/%c0%ae%c0%ae/secrets",
            "/records/%ff",
            "records/1",
            "*",
            "",
        ] {
            assert!(path(raw).is_err(), "{raw} was accepted as {:?}", path(raw));
        }
        assert!(path(&format!("/{}", "a".repeat(MAX_PATH_BYTES))).is_err());
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        for raw in [
            "/records/../secrets/1",
            "/a%20b/%c3%bc",
            "//x//y/./z/..",
            "/%7e~",
            "/%25zz",
            "/%25%7A",
        ] {
            let once = ok(raw);
            assert_eq!(ok(&once), once, "{raw}");
        }
    }

    #[test]
    fn a_query_that_names_another_method_is_seen_in_every_spelling() {
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=put",
            "%5fmethod=delete",
            "%5F%6D%65%74%68%6F%64=delete",
            "%255fmethod=delete",
            ".method=DELETE",
            "+method=DELETE",
            "%20method=DELETE",
            "%2Emethod=DELETE",
            "[method=DELETE",
            "_method[]=DELETE",
            "_method[x]=DELETE",
            " _method=DELETE",
            "a=1;_method=DELETE",
            "_method%00=DELETE",
            "_method%00x=DELETE",
            "-method=DELETE",
            "X-HTTP-Method-Override=DELETE",
            "x_http_method=PUT",
            "_method",
        ] {
            assert!(query_overrides_method(query).is_some(), "{query}");
        }
        for query in [
            "method=x&my_method=y",
            "_methods=1",
            "a=_method",
            "_method_x=1",
        ] {
            assert_eq!(query_overrides_method(query), None, "{query}");
        }
    }

    #[test]
    fn grpc_methods_have_a_shape() {
        assert!(is_grpc_method("/demo.v1.CustomerService/GetCustomer"));
        assert!(is_grpc_method("/a.B/c_1"));
        assert!(!is_grpc_method("/Service/Method"));
        assert!(!is_grpc_method("/customers/c-1"));
        assert!(is_grpc_method("/demo.v1.CustomerService/Get/x"));
        assert!(is_grpc_method("/demo.v1.CustomerService/Get/"));
        assert!(!is_grpc_method("/demo.v1.CustomerService/"));
        assert!(!is_grpc_method("/demo.v1.CustomerService"));
        assert!(!is_grpc_method("/demo..v1/Get"));
        assert!(!is_grpc_method("/demo.v1.S/Get%41"));
    }
}
