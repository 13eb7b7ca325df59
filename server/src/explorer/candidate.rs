//! `/compare` and `POST /api/diff`: a candidate policy, from the compare
//! form or as YAML, compared with the serving one on the blocking pool
//! (two at a time, as pages are drawn) and answered as the compare page
//! (`compare.rs` draws it) or as the diff's JSON. The candidate is only
//! evaluated, never served.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::reply::{error, json_reply, read_limited, reply};
use super::{Explorer, compare};
use crate::engine::{self, Policy};

/// The largest candidate policy `/api/diff` and `/compare` take: a
/// caller's input over HTTP, so small whatever the serving policy's own
/// limits (`--max-policy-bytes`) are.
const MAX_CANDIDATE_BYTES: usize = 128 * 1024;
/// The candidate's limits when it is read: no flag raises them.
const CANDIDATE_LIMITS: engine::PolicyLimits = engine::PolicyLimits {
    max_file_bytes: MAX_CANDIDATE_BYTES,
    max_bytes: MAX_CANDIDATE_BYTES,
    file_flag: "",
    policy_flag: "",
};
/// The compare form's body: the candidate, URL-encoded (up to three bytes
/// a byte).
const MAX_COMPARE_FORM_BYTES: usize = 3 * MAX_CANDIDATE_BYTES + 1024;

impl Explorer {
    /// Compares `candidate` (a policy's text) with the serving policy on
    /// the blocking pool, a few at a time: the diff and the candidate's
    /// matrix, or the candidate's diagnostics.
    async fn compare(&self, candidate: String) -> Result<compare::Outcome, String> {
        let serving = self.store.current();
        let place = self
            .drawing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| format!("the comparison could not be made: {e}"))?;
        // The place goes with the work, as for pages: a caller that gives
        // up does not let another comparison start beside this one.
        tokio::task::spawn_blocking(move || {
            let _place = place;
            let source = engine::PolicySource {
                name: "candidate.yaml",
                text: &candidate,
            };
            match Policy::load_within(&[source], &CANDIDATE_LIMITS) {
                Err(diagnostics) => compare::Outcome::Invalid(
                    diagnostics
                        .iter()
                        .take(engine::MAX_SHOWN)
                        .map(ToString::to_string)
                        .collect(),
                ),
                Ok(policy) => compare::Outcome::Compared {
                    diff: Box::new(serving.diff(&policy)),
                    candidate: Box::new(policy.matrix()),
                },
            }
        })
        .await
        .map_err(|e| format!("the comparison could not be made: {e}"))
    }

    /// `GET /compare` (no candidate) and `POST /compare` (the form).
    pub(super) async fn compare_page(&self, req: Option<Request>) -> Response {
        let serving = self.store.current();
        let (candidate, outcome) = match req {
            None => (String::new(), compare::Outcome::Empty),
            Some(req) => {
                // A form any site could post: only this page's own.
                let cross_site = req
                    .headers()
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|site| site != "same-origin" && site != "none");
                if cross_site {
                    return error(
                        StatusCode::FORBIDDEN,
                        "the compare form is answered only when it is sent from this page",
                    );
                }
                if !purposegate_runtime::http::sends(
                    req.headers(),
                    &["application/x-www-form-urlencoded"],
                ) {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "send the form as `application/x-www-form-urlencoded`",
                    );
                }
                let body = match read_limited(req, MAX_COMPARE_FORM_BYTES).await {
                    Ok(body) => body,
                    Err(refused) => return refused,
                };
                let candidate = form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "policy")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let outcome = if candidate.trim().is_empty() {
                    compare::Outcome::Invalid(vec!["the form's `policy` is empty".into()])
                } else {
                    match self.compare(candidate.clone()).await {
                        Ok(outcome) => outcome,
                        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
                    }
                };
                (candidate, outcome)
            }
        };
        let html = compare::render(serving.name(), serving.revision(), &candidate, &outcome);
        let mut response = reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from(html),
        );
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; form-action 'self'; img-src 'self'",
            ),
        );
        response
    }

    /// `POST /api/diff`: the candidate as YAML; the diff as JSON.
    pub(super) async fn diff_json(&self, req: Request) -> Response {
        // A YAML type is not one a page on another site may send without
        // asking first (CORS preflight), which this server never grants.
        if !purposegate_runtime::http::sends(
            req.headers(),
            &["application/yaml", "application/x-yaml", "text/yaml"],
        ) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the candidate policy as `Content-Type: application/yaml`",
            );
        }
        let body = match read_limited(req, MAX_CANDIDATE_BYTES).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let Ok(text) = String::from_utf8(body.to_vec()) else {
            return error(StatusCode::BAD_REQUEST, "the candidate policy is not UTF-8");
        };
        match self.compare(text).await {
            Ok(compare::Outcome::Compared { diff, .. }) => json_reply(&diff),
            Ok(compare::Outcome::Invalid(diagnostics)) => reply(
                StatusCode::BAD_REQUEST,
                "application/json",
                Bytes::from(
                    json!({
                        "error": "the candidate policy is invalid",
                        "diagnostics": diagnostics,
                    })
                    .to_string(),
                ),
            ),
            Ok(compare::Outcome::Empty) => error(StatusCode::BAD_REQUEST, "no candidate policy"),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    }
}
