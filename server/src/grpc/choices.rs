//! `purposegate.v1.ChoicesService`: record, read and trace choices. Only
//! callers named by `--choices-writers` (their mTLS identities, globs;
//! `*` any caller) may: choices are personal data, read as well as
//! written; anyone else is `PERMISSION_DENIED` and nothing is stored.

use std::pin::Pin;
use std::sync::Arc;

use purposegate_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::caller_names;
use crate::choices::{CachedChoices, ChoiceRecord, ChoicesStore, NewChoice, StoreError};
use crate::engine::ChoiceState;
use crate::purpose_context::Issuers;
use crate::store::PolicyStore;

/// The choices API over a store.
#[derive(Debug, Clone)]
pub struct ChoicesServer {
    choices: Arc<CachedChoices>,
    policies: Arc<PolicyStore>,
    writers: Arc<Issuers>,
    /// Places for `WatchChoices` streams.
    watchers: super::Watchers,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl ChoicesServer {
    /// The store the API reads and writes.
    pub fn choices(&self) -> &Arc<CachedChoices> {
        &self.choices
    }

    pub fn new(
        choices: Arc<CachedChoices>,
        policies: Arc<PolicyStore>,
        writers: &[String],
        watchers: super::Watchers,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        ChoicesServer {
            choices,
            policies,
            writers: Arc::new(Issuers::new(writers)),
            watchers,
            shutdown,
        }
    }

    /// The caller's name that makes it a writer, or why it is none.
    pub(super) fn writer<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let names = caller_names(request);
        match self.writers.issuer(&names.0) {
            Some("") => Ok("-".to_string()),
            Some(name) => Ok(name.to_string()),
            None if self.writers.is_empty() => Err(Status::permission_denied(
                "no caller may use choices: the server was started without --choices-writers",
            )),
            None => Err(Status::permission_denied(match names.0.first() {
                Some(name) => format!("`{name}` is not among --choices-writers"),
                None => "a caller without a certificate is not among --choices-writers".into(),
            })),
        }
    }
}

fn store_error(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(m) => Status::invalid_argument(m),
        StoreError::Unavailable(m) => Status::unavailable(m),
    }
}

fn state_of(state: i32) -> Result<ChoiceState, Status> {
    match pb::ChoiceState::try_from(state) {
        Ok(pb::ChoiceState::Granted) => Ok(ChoiceState::Granted),
        Ok(pb::ChoiceState::Withdrawn) => Ok(ChoiceState::Withdrawn),
        Ok(pb::ChoiceState::Objected) => Ok(ChoiceState::Objected),
        Ok(pb::ChoiceState::Restricted) => Ok(ChoiceState::Restricted),
        Ok(pb::ChoiceState::Unspecified) => Err(Status::invalid_argument(
            "`state` is required: CHOICE_STATE_GRANTED, _WITHDRAWN, _OBJECTED or _RESTRICTED",
        )),
        Err(_) => Err(Status::invalid_argument(format!(
            "`state` has unknown value {state}"
        ))),
    }
}

fn pb_state(state: ChoiceState) -> pb::ChoiceState {
    match state {
        ChoiceState::Granted => pb::ChoiceState::Granted,
        ChoiceState::Withdrawn => pb::ChoiceState::Withdrawn,
        ChoiceState::Objected => pb::ChoiceState::Objected,
        ChoiceState::Restricted => pb::ChoiceState::Restricted,
    }
}

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

pub fn to_pb(r: ChoiceRecord) -> pb::ChoiceRecord {
    pb::ChoiceRecord {
        tenant: r.choice.tenant,
        data_subject: r.choice.data_subject,
        purpose: r.choice.purpose,
        state: pb_state(r.choice.state).into(),
        expires_at: r.choice.expires_at.map(timestamp),
        basis: r.choice.basis,
        evidence: r.choice.evidence.into_iter().collect(),
        recorded_by: r.recorded_by,
        recorded_at: Some(timestamp(r.recorded_at)),
        revision: r.revision,
    }
}

/// A tenant and data subject to read, checked.
fn whose(tenant: &str, data_subject: &str) -> Result<(), Status> {
    let max = crate::choices::MAX_ID_BYTES;
    if tenant.is_empty() {
        return Err(Status::invalid_argument("`tenant` is required"));
    }
    for (name, value) in [("tenant", tenant), ("data_subject", data_subject)] {
        if value.len() > max {
            return Err(Status::invalid_argument(format!(
                "`{name}` is {} bytes long; at most {max} are accepted",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Events read from the store at a time for `ChoiceHistory`.
const HISTORY_PAGE: usize = 500;

type History = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ChoiceRecord, Status>> + Send>>;

#[tonic::async_trait]
impl pb::choices_service_server::ChoicesService for ChoicesServer {
    async fn record_choice(
        &self,
        request: Request<pb::RecordChoiceRequest>,
    ) -> Result<Response<pb::ChoiceRecord>, Status> {
        let writer = self.writer(&request)?;
        let r = request.into_inner();
        let choice = NewChoice {
            tenant: r.tenant,
            data_subject: r.data_subject,
            purpose: r.purpose,
            state: state_of(r.state)?,
            expires_at: r.expires_at.map(|t| t.seconds),
            basis: r.basis,
            evidence: r.evidence.into_iter().collect(),
        };
        let now = crate::choices::now();
        crate::choices::validate(&choice, &self.policies.current(), now).map_err(store_error)?;
        let store = self.choices.clone();
        let record = tokio::task::spawn_blocking(move || store.record(choice, &writer, now))
            .await
            .map_err(|e| Status::internal(format!("the choice was not recorded: {e}")))?
            .map_err(store_error)?;
        Ok(Response::new(to_pb(record)))
    }

    async fn get_choices(
        &self,
        request: Request<pb::GetChoicesRequest>,
    ) -> Result<Response<pb::GetChoicesResponse>, Status> {
        self.writer(&request)?;
        let r = request.into_inner();
        whose(&r.tenant, &r.data_subject)?;
        let store = self.choices.clone();
        let (records, revision) =
            tokio::task::spawn_blocking(move || store.current_records(&r.tenant, &r.data_subject))
                .await
                .map_err(|e| Status::internal(format!("the choices were not read: {e}")))?
                .map_err(store_error)?;
        Ok(Response::new(pb::GetChoicesResponse {
            choices: records.into_iter().map(to_pb).collect(),
            revision,
        }))
    }

    type ChoiceHistoryStream = History;

    async fn choice_history(
        &self,
        request: Request<pb::ChoiceHistoryRequest>,
    ) -> Result<Response<History>, Status> {
        self.writer(&request)?;
        let r = request.into_inner();
        whose(&r.tenant, &r.data_subject)?;
        // Read a page at a time, and only as fast as the caller takes
        // them: a history of a million events is never held at once.
        let store = self.choices.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                let (s, tenant, subject) =
                    (store.clone(), r.tenant.clone(), r.data_subject.clone());
                let page = tokio::task::spawn_blocking(move || {
                    s.history(&tenant, &subject, after, HISTORY_PAGE)
                })
                .await;
                let page = match page {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(store_error(e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "the history was not read: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let last = page.len() < HISTORY_PAGE;
                for record in page {
                    after = record.revision;
                    if tx.send(Ok(to_pb(record))).await.is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchChoicesStream = super::watch_choices::ChangeStream;

    async fn watch_choices(
        &self,
        request: Request<pb::WatchChoicesRequest>,
    ) -> Result<Response<Self::WatchChoicesStream>, Status> {
        let after = request.into_inner().after_revision;
        let changes = super::watch_choices::changes(self.choices.clone(), after);
        let changes = self.watchers.hold(changes)?;
        Ok(Response::new(Box::pin(
            purposegate_runtime::grpc::end_on_shutdown(changes, self.shutdown.clone(), None),
        )))
    }
}
