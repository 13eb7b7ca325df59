//! Why a call does not reach the app, or stops reaching it: the one type
//! every face and step of the sidecar refuses with, and what each kind of
//! refusal is on the wire.

/// What kind of refusal, which decides its status and whether `--dry-run`
/// lets the call through anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not permitted: no purpose, no route, a denial, a bad header. 403, or
    /// gRPC `PERMISSION_DENIED`. `--dry-run` lets it through.
    Denied,
    /// The call cannot be forwarded as one request (a body where its
    /// method has none): 400, or gRPC `INVALID_ARGUMENT`. Never let
    /// through, not even by `--dry-run`: what would reach the app is not
    /// what anyone judged.
    Malformed,
    /// The call moved no data for `--call-idle-timeout`: 408, or gRPC
    /// `DEADLINE_EXCEEDED`.
    Idle,
}

/// Why a call is not let through, before or after asking.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub decision: &'static str,
    pub reason: String,
    pub rule_ids: Vec<String>,
    pub revision: String,
}

impl Refusal {
    /// Refused before any decision: no purpose, no route, a bad header.
    pub fn refused(reason: String) -> Self {
        Refusal {
            kind: RefusalKind::Denied,
            decision: "DENY",
            reason,
            rule_ids: Vec::new(),
            revision: String::new(),
        }
    }

    /// A call that cannot be forwarded as the one request it was judged as.
    pub fn malformed(reason: String) -> Self {
        Refusal {
            kind: RefusalKind::Malformed,
            ..Refusal::refused(reason)
        }
    }

    /// A call ended for moving no data.
    pub fn idle(reason: String) -> Self {
        Refusal {
            kind: RefusalKind::Idle,
            ..Refusal::refused(reason)
        }
    }

    /// Whether `--dry-run` may let the call through anyway.
    pub fn dry_run_may_pass(&self) -> bool {
        self.kind == RefusalKind::Denied
    }

    /// The HTTP status an HTTP caller gets.
    pub fn http_status(&self) -> hyper::StatusCode {
        match self.kind {
            RefusalKind::Denied => hyper::StatusCode::FORBIDDEN,
            RefusalKind::Malformed => hyper::StatusCode::BAD_REQUEST,
            RefusalKind::Idle => hyper::StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The `grpc-status` a gRPC caller gets.
    pub fn grpc_status(&self) -> &'static str {
        match self.kind {
            RefusalKind::Denied => "7",
            RefusalKind::Malformed => "3",
            RefusalKind::Idle => "4",
        }
    }

    /// The `x-purposegate-*` headers a refused caller gets.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("x-purposegate-decision", self.decision.to_string()),
            ("x-purposegate-reason", self.reason.clone()),
            ("x-purposegate-rule-ids", self.rule_ids.join(",")),
            ("x-purposegate-revision", self.revision.clone()),
        ]
    }
}
