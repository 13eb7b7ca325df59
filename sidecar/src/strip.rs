//! The one list of request headers that never reach the app as the caller
//! wrote them, and why. docs/sidecar.md prints the same list.
//!
//! A name is compared as CGI and WSGI servers read it: `_` and `-` alike,
//! any case (`X_Forwarded_Host` is `x-forwarded-host` to a Flask app).
//!
//! - **Refused** (the call is refused, 403): headers that make frameworks
//!   run another method than the one judged
//!   ([`crate::headers::METHOD_OVERRIDES`], read by
//!   [`crate::headers::Stated::read`]); in the query, see
//!   [`crate::canonical::query_overrides_method`].
//! - **Decided** (removed; the decided values are set again): `x-purpose`,
//!   `x-subject`, ... ([`crate::headers::DECIDED`]) and the sidecar's own
//!   `x-purposegate-*`.
//! - **Hop-by-hop** (removed: they belong to one connection, and the
//!   sidecar frames the call to the app itself): [`HOP_BY_HOP`] and every
//!   name the caller lists in `connection`.
//! - **Forwarding** (removed; the sidecar sets `x-forwarded-for` and
//!   `x-forwarded-proto` itself): who the client is and how it came,
//!   [`FORWARDING`] and every `x-forwarded-*`.
//! - **Rewrite** (removed): headers that change the URL, host or method an
//!   app or its middleware serves ([`REWRITE`], and Envoy's `x-envoy-*`).
//!
//! Trailers of a request lose all of these and, as RFC 9110 section 6.5.1
//! says a recipient must not act on them there, the fields that frame,
//! route, authenticate or modify a request ([`NOT_IN_TRAILERS`]).

use hyper::HeaderMap;
use hyper::header::HeaderName;

use crate::headers::{folds_to, folds_to_prefix, overrides_method};

/// Headers of one connection (RFC 9110 section 7.6.1), and `expect`, which
/// the sidecar answers itself (`100 Continue`) before it reads the body.
pub const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "expect",
    "http2-settings",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Who the client is and how it came, as a proxy in front of the app
/// would say it (besides every `x-forwarded-*`).
pub const FORWARDING: [&str; 14] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-proxyuser-ip",
    "x-forwarded",
    "front-end-https",
    "x-arr-ssl",
    "x-url-scheme",
];

/// Headers that change the URL, host, prefix or method an app (or its
/// middleware: IIS URL Rewrite, Symfony, Laravel, werkzeug's ProxyFix,
/// Envoy) serves, besides every `x-envoy-*`.
pub const REWRITE: [&str; 13] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-original-path",
    "x-original-method",
    "x-http-host-override",
    "x-host",
    "x-http-destinationurl",
    "x-script-name",
    "script-name",
    "x-scheme",
    "x-proxy-url",
];

/// Prefixes of whole families: forwarding and Envoy's own headers.
const PREFIXES: [&str; 2] = ["x-forwarded-", "x-envoy-"];

/// Fields a request's trailers must not carry (RFC 9110 section 6.5.1):
/// framing, routing, authentication, request modifiers, content format.
pub const NOT_IN_TRAILERS: [&str; 19] = [
    "content-length",
    "content-type",
    "content-encoding",
    "content-range",
    "host",
    "authorization",
    "cookie",
    "max-forwards",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "cache-control",
    "pragma",
    "trailer",
    "via",
    "x-purposegate-via",
];

/// Why a header never reaches the app as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    Decided,
    HopByHop,
    Forwarding,
    Rewrite,
}

/// Why the request header `name` is removed before the call reaches the
/// app; `None` when it passes.
pub fn removed(name: &str) -> Option<Removed> {
    if crate::headers::is_reserved(name) {
        Some(Removed::Decided)
    } else if HOP_BY_HOP.iter().any(|h| folds_to(name, h)) {
        Some(Removed::HopByHop)
    } else if FORWARDING.iter().any(|h| folds_to(name, h)) || folds_to_prefix(name, PREFIXES[0]) {
        Some(Removed::Forwarding)
    } else if REWRITE.iter().any(|h| folds_to(name, h)) || folds_to_prefix(name, PREFIXES[1]) {
        Some(Removed::Rewrite)
    } else {
        None
    }
}

/// Removes from `headers` every name `remove` picks, in one pass over the
/// names and without allocating when there is none.
fn remove_where(headers: &mut HeaderMap, remove: impl Fn(&str) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if remove(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Which of the names the proxy reads or sets after [`request_headers`]
/// the request still carries: a lookup of a name that is absent costs as
/// much as one of a name that is present, and nearly every call carries
/// none of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub baggage: bool,
    pub host: bool,
}

/// What becomes of a request's `te`: only `te: trailers` goes on, and
/// only for gRPC.
#[derive(Debug, Clone, Copy)]
enum Te {
    Kept,
    SetAgain,
    Removed,
}

/// The request headers as the app receives them: every name in the list
/// above and every name the caller lists in `connection` removed. `te:
/// trailers` stays for gRPC, which needs it. The caller of a call let
/// through by `--dry-run` without a question keeps its decided headers.
/// Names `set_again` picks (as the map spells them) are left for the
/// caller, which must then set or remove each: an insert replaces every
/// value of its name, and a removal first would cost as much again on
/// every call.
pub fn request_headers(
    headers: &mut HeaderMap,
    grpc: bool,
    keep_decided: bool,
    set_again: impl Fn(&str) -> bool,
) -> Left {
    use hyper::header::{CONNECTION, HOST, TE, TRAILER};
    let mut left = Left::default();
    let (mut connection, mut te, mut trailer) = (false, false, false);
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if *name == CONNECTION {
            connection = true;
        } else if *name == TE {
            // Decided below, by its value.
            te = true;
            continue;
        } else if *name == TRAILER {
            trailer = true;
        } else if *name == HOST {
            left.host = true;
        } else if *name == crate::headers::name::BAGGAGE {
            left.baggage = true;
        }
        let remove = match removed(name.as_str()) {
            None => false,
            Some(_) if set_again(name.as_str()) => false,
            Some(Removed::Decided) => !(keep_decided && crate::headers::is_decided(name.as_str())),
            Some(_) => true,
        };
        if remove {
            doomed.push(name.clone());
        }
    }
    // What becomes of `te`, read before any nominated name is removed.
    let mut te = te.then(|| {
        let mut values = headers.get_all(TE).iter();
        match (values.next(), values.next()) {
            (Some(first), _) if !(grpc && first.as_bytes().eq_ignore_ascii_case(b"trailers")) => {
                Te::Removed
            }
            (Some(only), None) if only.as_bytes() == b"trailers" => Te::Kept,
            (Some(_), _) => Te::SetAgain,
            (None, _) => Te::Removed,
        }
    });
    let nominated: Vec<HeaderName> = if connection {
        headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !(keep_decided && crate::headers::is_decided(name.as_str())))
            .collect()
    } else {
        Vec::new()
    };
    for name in doomed.into_iter().chain(nominated) {
        if name == TE && matches!(te, Some(Te::Kept)) {
            // Named in `connection`: gone, then set again.
            te = Some(Te::SetAgain);
        } else if name == HOST {
            left.host = false;
        } else if name == crate::headers::name::BAGGAGE {
            left.baggage = false;
        }
        headers.remove(name);
    }
    match te {
        // Already `te: trailers`, once, as the sidecar would say it.
        Some(Te::Kept) => {}
        // Set again, once, whatever else the caller sent.
        Some(Te::SetAgain) => {
            headers.insert(TE, hyper::header::HeaderValue::from_static("trailers"));
        }
        Some(Te::Removed) => {
            headers.remove(TE);
        }
        None => {}
    }
    if trailer {
        announce_trailers(headers);
    }
    left
}

/// A request's trailers as the app receives them: see the module doc.
pub fn request_trailers(trailers: &mut HeaderMap) {
    remove_where(trailers, |name| {
        removed(name).is_some()
            || overrides_method(name).is_some()
            || NOT_IN_TRAILERS.iter().any(|h| folds_to(name, h))
    });
}

/// Keeps out of `trailer` (which announces the trailers a request ends
/// with) every name its trailers will lose.
fn announce_trailers(headers: &mut HeaderMap) {
    let announced: Vec<String> = headers
        .get_all(hyper::header::TRAILER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|name| {
            !name.is_empty()
                && removed(name).is_none()
                && overrides_method(name).is_none()
                && !NOT_IN_TRAILERS.iter().any(|h| folds_to(name, h))
        })
        .map(str::to_string)
        .collect();
    headers.remove(hyper::header::TRAILER);
    if announced.is_empty() {
        return;
    }
    if let Ok(value) = hyper::header::HeaderValue::from_str(&announced.join(", ")) {
        headers.insert(hyper::header::TRAILER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn every_class_is_removed_in_every_spelling() {
        for (name, why) in [
            ("X_Purpose", Removed::Decided),
            ("x-purposegate-decision", Removed::Decided),
            ("Transfer-Encoding", Removed::HopByHop),
            ("expect", Removed::HopByHop),
            ("X-Forwarded-Server", Removed::Forwarding),
            ("x_forwarded_host", Removed::Forwarding),
            ("X-FORWARDED-SCHEME", Removed::Forwarding),
            ("True-Client-IP", Removed::Forwarding),
            ("forwarded", Removed::Forwarding),
            ("X-Original-Host", Removed::Rewrite),
            ("X-HTTP-Host-Override", Removed::Rewrite),
            ("x_original_url", Removed::Rewrite),
            ("x-envoy-original-path", Removed::Rewrite),
        ] {
            assert_eq!(removed(name), Some(why), "{name}");
        }
        for name in [
            "accept",
            "x-forwarded",
            "x-envoy",
            "content-type",
            "x-hosts",
        ] {
            assert_ne!(removed(name), Some(Removed::Rewrite), "{name}");
        }
        assert_eq!(removed("accept"), None);
    }

    #[test]
    fn the_app_gets_what_is_left_and_gets_te_only_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("x-original-host", HeaderValue::from_static("evil"));
        h.insert(
            "trailer",
            HeaderValue::from_static("x-purpose, x-checksum, x-http-method-override, host"),
        );
        let mut grpc = h.clone();
        request_headers(&mut h, false, false, |_| false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["trailer"], "x-checksum");
        request_headers(&mut grpc, true, false, |_| false);
        assert_eq!(grpc["te"], "trailers");
        // A second `te` never rides along with the one kept.
        let mut twice = HeaderMap::new();
        twice.append("te", HeaderValue::from_static("trailers"));
        twice.append("te", HeaderValue::from_static("gzip"));
        request_headers(&mut twice, true, false, |_| false);
        assert_eq!(twice.get_all("te").iter().collect::<Vec<_>>(), ["trailers"]);
    }

    #[test]
    fn te_goes_on_as_sent_only_when_it_is_exactly_trailers_and_otherwise_is_set_again() {
        let te_after = |values: &[&'static str], connection: Option<&'static str>| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("te", HeaderValue::from_static(v));
            }
            if let Some(c) = connection {
                h.insert("connection", HeaderValue::from_static(c));
            }
            request_headers(&mut h, true, false, |_| false);
            h.get_all("te").iter().cloned().collect::<Vec<_>>()
        };
        assert_eq!(te_after(&["trailers"], None), ["trailers"]);
        assert_eq!(te_after(&["Trailers"], None), ["trailers"]);
        assert_eq!(te_after(&["trailers", "trailers"], None), ["trailers"]);
        // Named in `connection`, it is still set again for gRPC.
        assert_eq!(te_after(&["trailers"], Some("te")), ["trailers"]);
        assert!(te_after(&["gzip"], None).is_empty());
        assert!(te_after(&[], Some("te")).is_empty());
    }

    #[test]
    fn what_is_left_says_whether_host_and_baggage_remain() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("app"));
        h.insert("baggage", HeaderValue::from_static("k=v"));
        assert_eq!(
            request_headers(&mut h.clone(), false, false, |_| false),
            Left {
                baggage: true,
                host: true
            }
        );
        h.insert("connection", HeaderValue::from_static("baggage, host"));
        let left = request_headers(&mut h, false, false, |_| false);
        assert_eq!(left, Left::default());
        assert!(h.is_empty(), "{h:?}");
        assert_eq!(
            request_headers(&mut HeaderMap::new(), true, false, |_| false),
            Left::default()
        );
    }

    #[test]
    fn a_name_set_again_is_left_only_as_spelled() {
        let mut h = HeaderMap::new();
        h.insert("x-purpose", HeaderValue::from_static("stated"));
        h.insert("x_purpose", HeaderValue::from_static("look-alike"));
        h.insert("x-subject", HeaderValue::from_static("not set again"));
        request_headers(&mut h, false, false, |name| name == crate::headers::PURPOSE);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-purpose"]
        );
    }

    #[test]
    fn trailers_lose_what_a_header_section_would_and_more() {
        let mut t = HeaderMap::new();
        for name in [
            "x-purpose",
            "x_http_method_override",
            "x-forwarded-for",
            "x-original-url",
            "content-length",
            "host",
            "authorization",
            "x-checksum",
        ] {
            t.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        request_trailers(&mut t);
        assert_eq!(
            t.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-checksum"]
        );
    }
}
