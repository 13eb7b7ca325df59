//! `DecisionService.PermittedSubjects`: which data subjects of a tenant a
//! purpose may serve now. Each data subject with choices recorded under
//! the tenant is decided as `Check` would decide the question for them
//! (their choices and the tenant's), in id order, a page of the store at a
//! time, on the work pool; and the answer says what a data subject with no
//! choice recorded gets. It lists data subjects, so only
//! `--choices-writers` may ask.

use purposegate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::choices::ChoicesServer;
use crate::audit::Via;
use crate::choices::{ChoicesStore, MAX_ID_BYTES, StoreError};
use crate::engine::{ChoiceFacts, Decision};
use purposegate_proto::convert;

/// Data subjects looked at on a page, by default and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(m) => Status::invalid_argument(m),
        StoreError::Unavailable(m) => Status::unavailable(m),
    }
}

/// The data subject id a page token carries (the last one looked at),
/// hex-encoded: a cursor, not a secret.
fn cursor(token: &str) -> Result<String, Status> {
    let bad = || Status::invalid_argument("`page_token` is not one this server gave");
    if token.len() > 2 * MAX_ID_BYTES || !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect::<Result<Vec<u8>, Status>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn token(subject: &str) -> String {
    subject.bytes().map(|b| format!("{b:02x}")).collect()
}

impl ChoicesServer {
    pub async fn permitted_subjects(
        &self,
        request: Request<pb::PermittedSubjectsRequest>,
        decider: &crate::decide::Decider,
        pool: &crate::work::WorkPool,
    ) -> Result<Response<pb::PermittedSubjectsResponse>, Status> {
        self.writer(&request)?;
        let peer = super::caller_addr(&request);
        let r = request.into_inner();
        let question = r.request.ok_or_else(|| {
            Status::invalid_argument(
                "`request` is required: the question to ask of each data subject",
            )
        })?;
        let mut req =
            convert::request(question, "").map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.resource.owner_tenant.is_empty() {
            return Err(Status::invalid_argument(
                "`request.resource.owner_tenant` is required: the tenant whose data subjects to list",
            ));
        }
        let size = match usize::try_from(r.page_size).unwrap_or(usize::MAX) {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "`page_size` {n} is over {MAX_PAGE}"
                )));
            }
            n => n,
        };
        let after = cursor(&r.page_token)?;
        req.resource.data_subject.clear();
        let store = self.choices().clone();
        let decider = decider.clone();
        let job = move || -> Result<pb::PermittedSubjectsResponse, StoreError> {
            let start = std::time::Instant::now();
            let policy = decider.policy();
            let tenant = req.resource.owner_tenant.clone();
            let now = crate::choices::now();
            let (tenant_choices, _) = store.current(&tenant, "")?;
            let revision = store.revision();
            // One more than the page: whether another page follows.
            let mut subjects = store.subjects(&tenant, &after, size + 1)?;
            let more = subjects.len() > size;
            subjects.truncate(size);
            let decide = |subject: &str, choices: Vec<crate::engine::Choice>| {
                let mut asked = req.clone();
                asked.resource.data_subject = subject.to_string();
                let facts = ChoiceFacts {
                    now,
                    revision,
                    tenant: Some(tenant_choices.clone()),
                    subject: Some(choices),
                };
                policy.evaluate_with(&asked, &facts).decision
            };
            let unlisted = decide("(a data subject with no choice recorded)", Vec::new());
            let examined = u32::try_from(subjects.len()).unwrap_or(u32::MAX);
            let next_page_token = match subjects.last() {
                Some((last, _)) if more => token(last),
                _ => String::new(),
            };
            let data_subjects: Vec<String> = subjects
                .into_iter()
                .filter_map(|(subject, choices)| {
                    (decide(&subject, choices) == Decision::Permit).then_some(subject)
                })
                .collect();
            decider.decision_log().record_subjects(
                Via::face("grpc.PermittedSubjects"),
                req.clone(),
                &data_subjects,
                policy.revision().clone(),
                start.elapsed(),
            );
            Ok(pb::PermittedSubjectsResponse {
                data_subjects,
                next_page_token,
                unlisted: convert::decision(unlisted).into(),
                policy_revision: policy.revision().to_string(),
                choices_revision: revision,
                examined,
            })
        };
        let answer = pool
            .run(peer, size.saturating_mul(64), job)
            .await
            .map_err(super::busy)?
            .map_err(store_error)?;
        Ok(Response::new(answer))
    }
}
