//! `purposegate-server choices record|show|history`: the operators' way
//! to the server's `ChoicesService`, for the writers `--choices-writers`
//! names. Prints what the server answered as JSON (the protobuf JSON of
//! `ChoiceRecord`, as grpcurl prints it); `history` one record a line.
//! Exit 0 on an answer, 1 when the server refused (why on stderr), 2 when
//! it could not be asked.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use purposegate_proto::v1 as pb;
use purposegate_runtime::tls::{ClientTls, TlsFiles};
use purposegate_server::engine::rfc3339;
use std::collections::BTreeMap;

use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::{err, out};

#[derive(Debug, Subcommand)]
pub(crate) enum ChoicesCommand {
    /// Record one choice (an event, kept as evidence): a tenant's own
    /// configuration (no --data-subject) or a data subject's consent,
    /// withdrawal, objection or restriction. Prints the record stored.
    Record(Box<RecordArgs>),
    /// The current choices of a tenant (no --data-subject: its own
    /// configuration) or of one of its data subjects, and the revision
    /// they were read at.
    Show(WhoseArgs),
    /// Every event recorded for a tenant or data subject, oldest first:
    /// who recorded it, when, and the evidence given. One JSON record a
    /// line.
    History(WhoseArgs),
    /// Write choices exported from elsewhere (JSON lines) into a choices
    /// database no server has open, in one transaction: all of them, or
    /// none at the first bad line (exit 1, naming it).
    Import(super::choices_import::ImportArgs),
}

/// Where the server is, and how to reach it.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server's gRPC address: http://HOST:PORT, or https:// with the
    /// TLS flags.
    #[arg(
        long,
        env = "PURPOSEGATE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// PEM certificate chain presented to the server (its identity is
    /// what --choices-writers must name).
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// PEM CA bundle that verifies the server's certificate.
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// How long to wait for the server's answer.
    #[arg(long, default_value = "10s", value_parser = purposegate_runtime::units::parse_timeout)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct WhoseArgs {
    /// The customer.
    #[arg(long)]
    tenant: String,
    /// The data subject within the tenant; none for the tenant's own
    /// configuration.
    #[arg(long, default_value = "")]
    data_subject: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RecordArgs {
    /// The customer.
    #[arg(long)]
    tenant: String,
    /// The data subject within the tenant; none for the tenant's own
    /// configuration.
    #[arg(long, default_value = "")]
    data_subject: String,
    /// A purpose the serving policy declares (none for `restricted`).
    #[arg(long, default_value = "")]
    purpose: String,
    /// granted, withdrawn, objected or restricted.
    #[arg(long, value_parser = parse_state)]
    state: pb::ChoiceState,
    /// When the choice lapses, from now: e.g. 90d, 12h, 30m.
    #[arg(long, value_parser = parse_lifetime, conflicts_with = "expires_at")]
    expires_in: Option<i64>,
    /// When the choice lapses: an RFC 3339 UTC time, e.g.
    /// 2027-06-30T00:00:00Z.
    #[arg(long, value_parser = parse_time)]
    expires_at: Option<i64>,
    /// The legal basis or reason, in words (e.g. consent).
    #[arg(long, default_value = "")]
    basis: String,
    /// Evidence KEY=VALUE (repeatable): notice version, source, ...
    #[arg(long = "evidence", value_parser = super::parse_pair)]
    evidence: Vec<(String, String)>,
    #[command(flatten)]
    server: ServerArgs,
}

fn parse_state(s: &str) -> Result<pb::ChoiceState, String> {
    match s.to_ascii_lowercase().as_str() {
        "granted" => Ok(pb::ChoiceState::Granted),
        "withdrawn" => Ok(pb::ChoiceState::Withdrawn),
        "objected" => Ok(pb::ChoiceState::Objected),
        "restricted" => Ok(pb::ChoiceState::Restricted),
        _ => Err(format!(
            "unknown state `{s}`; expected granted, withdrawn, objected or restricted"
        )),
    }
}

/// Seconds from now: a number and a unit (s, m, h, d), at most 100 years.
fn parse_lifetime(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` needs a unit: s, m, h or d (e.g. 90d)"))?;
    let (number, unit) = s.split_at(at);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a lifetime like 90d, 12h or 30m"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(seconds) if seconds > 0 && seconds <= 100 * 366 * 86_400 => Ok(seconds),
        _ => Err(format!("`{s}`: more than nothing and at most 100 years")),
    }
}

/// Seconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not an RFC 3339 UTC time like 2027-06-30T00:00:00Z");
    let b = s.trim().as_bytes();
    if b.len() != 20
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !matches!(b.get(19), Some(b'Z' | b'z'))
    {
        return Err(bad());
    }
    let field = |from: usize, to: usize| -> Result<i64, String> {
        let digits = b.get(from..to).ok_or_else(bad)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d) = (field(0, 4)?, field(5, 7)?, field(8, 10)?);
    let (h, mi, se) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, d);
    // A day past its month's end (2027-02-30) comes back as another date.
    if purposegate_server::engine::civil_date(days) != (y, mo, d) {
        return Err(format!("`{s}`: no such day"));
    }
    Ok(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm, the inverse of `civil_date`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How a call went wrong: the server refused (1) or could not be asked (2).
enum Failed {
    Refused(String),
    Unreachable(String),
}

fn failed(status: &tonic::Status) -> Failed {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
            Failed::Unreachable(message)
        }
        _ => Failed::Refused(message),
    }
}

pub(crate) fn run(command: ChoicesCommand) -> ExitCode {
    let command = match command {
        ChoicesCommand::Import(args) => return super::choices_import::import(args),
        other => other,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            err(&format!("error: cannot start: {e}"));
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match command {
            ChoicesCommand::Record(args) => record(*args).await,
            ChoicesCommand::Show(args) => show(args).await,
            ChoicesCommand::History(args) => history(args).await,
            ChoicesCommand::Import(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed::Refused(why)) => {
            err(&format!("error: the server refused: {why}"));
            ExitCode::from(1)
        }
        Err(Failed::Unreachable(why)) => {
            err(&format!("error: {why}"));
            ExitCode::from(2)
        }
    }
}

type Client = pb::choices_service_client::ChoicesServiceClient<Channel>;

fn client(args: &ServerArgs) -> Result<Client, Failed> {
    let files = TlsFiles::from_flags(
        args.tls_cert.as_ref(),
        args.tls_key.as_ref(),
        args.tls_ca.as_ref(),
    )
    .map_err(Failed::Unreachable)?;
    let tls = files
        .map(|files| ClientTls::new(files, &[b"h2"]))
        .transpose()
        .map_err(Failed::Unreachable)?;
    let channel = purposegate_runtime::tls::connect::channel(
        &args.server,
        "--server",
        args.timeout,
        tls,
        "--tls-cert, --tls-key and --tls-ca",
    )
    .map_err(Failed::Unreachable)?;
    Ok(pb::choices_service_client::ChoicesServiceClient::new(
        channel,
    ))
}

/// The call, within `--timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failed> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(failed(&status)),
        Err(_) => Err(Failed::Unreachable(format!(
            "the server did not answer within {timeout:?}"
        ))),
    }
}

async fn record(args: RecordArgs) -> Result<(), Failed> {
    let mut client = client(&args.server)?;
    let now = purposegate_server::choices::now();
    let expires_at = args
        .expires_at
        .or(args.expires_in.map(|s| now.saturating_add(s)))
        .map(|seconds| prost_types::Timestamp { seconds, nanos: 0 });
    let request = pb::RecordChoiceRequest {
        tenant: args.tenant,
        data_subject: args.data_subject,
        purpose: args.purpose,
        state: args.state.into(),
        expires_at,
        basis: args.basis,
        evidence: args.evidence.into_iter().collect(),
    };
    let recorded = within(args.server.timeout, client.record_choice(request)).await?;
    out(&pretty(&record_json(&recorded)));
    Ok(())
}

async fn show(args: WhoseArgs) -> Result<(), Failed> {
    let mut client = client(&args.server)?;
    let request = pb::GetChoicesRequest {
        tenant: args.tenant,
        data_subject: args.data_subject,
    };
    let current = within(args.server.timeout, client.get_choices(request)).await?;
    out(&pretty(&CurrentJson {
        choices: current.choices.iter().map(record_json).collect(),
        revision: current.revision.to_string(),
    }));
    Ok(())
}

async fn history(args: WhoseArgs) -> Result<(), Failed> {
    let mut client = client(&args.server)?;
    let request = pb::ChoiceHistoryRequest {
        tenant: args.tenant,
        data_subject: args.data_subject,
    };
    let timeout = args.server.timeout;
    let mut events = within(timeout, client.choice_history(request)).await?;
    // Each record within the timeout of the one before: a history of any
    // length, but never a hung stream.
    loop {
        match tokio::time::timeout(timeout, events.next()).await {
            Ok(Some(Ok(event))) => out(&line(&record_json(&event))),
            Ok(Some(Err(status))) => return Err(failed(&status)),
            Ok(None) => return Ok(()),
            Err(_) => {
                return Err(Failed::Unreachable(format!(
                    "the history stopped for {timeout:?}"
                )));
            }
        }
    }
}

fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn line(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A `ChoiceRecord` as protobuf JSON, in the message's field order (as
/// grpcurl prints it): camelCase, empty fields left out, 64-bit numbers as
/// strings, times in RFC 3339.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    tenant: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    data_subject: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    purpose: &'a str,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    basis: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    evidence: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    recorded_by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_at: Option<String>,
    revision: String,
}

fn record_json(r: &pb::ChoiceRecord) -> RecordJson<'_> {
    RecordJson {
        tenant: &r.tenant,
        data_subject: &r.data_subject,
        purpose: &r.purpose,
        state: r.state().as_str_name(),
        expires_at: r.expires_at.as_ref().map(|t| rfc3339(t.seconds)),
        basis: &r.basis,
        evidence: r
            .evidence
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        recorded_by: &r.recorded_by,
        recorded_at: r.recorded_at.as_ref().map(|t| rfc3339(t.seconds)),
        revision: r.revision.to_string(),
    }
}

/// `GetChoicesResponse` as protobuf JSON.
#[derive(Serialize)]
struct CurrentJson<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    choices: Vec<RecordJson<'a>>,
    revision: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_lifetimes_are_read_exactly_or_refused() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-12-07T10:00:00Z"), Ok(1_796_637_600));
        assert_eq!(
            rfc3339(parse_time("2028-02-29T23:59:59Z").unwrap_or(0)),
            "2028-02-29T23:59:59Z"
        );
        for bad in [
            "2027-02-30T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-06-30",
            "2027-06-30T00:00:00+02:00",
            "+027-06-30T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_lifetime("90d"), Ok(90 * 86_400));
        assert_eq!(parse_lifetime("30m"), Ok(1800));
        for bad in ["90", "0d", "90y", "-1d", "999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
