//! `verify-log`: the walk's verdict, printed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use purposegate_server::audit::chain::Chain;
use purposegate_server::audit::verify::{self, Options, Verification};
use purposegate_server::engine::plural;
use purposegate_server::signing::PublicKey;

use super::{ReportFormat, err, out};

#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// Ed25519 public key (SubjectPublicKeyInfo PEM) the checkpoints must
    /// be signed with (repeatable). With one, every line must be signed
    /// and the log must end with its closing checkpoint; without, the
    /// chain alone is checked and checkpoints are counted.
    #[arg(long = "public-key", value_name = "PEM")]
    public_keys: Vec<PathBuf>,
    /// The origin every checkpoint must name (the server's
    /// --decision-log-origin) [default: the first checkpoint's].
    #[arg(long, value_name = "NAME")]
    origin: Option<String>,
    /// Accept a log still being written or left by a crash: lines no
    /// checkpoint signs (after the last one, or left out by a restart
    /// after a crash) and an end without the closing checkpoint are
    /// reported, not failed.
    #[arg(long)]
    allow_open_end: bool,
    /// A line the log must still hold, `SEQ:HASH`, as the server's process
    /// log prints at every checkpoint (`expect=`): kept elsewhere, it shows
    /// the log was not cut back before it (repeatable).
    #[arg(long, value_name = "SEQ:HASH", value_parser = parse_expect)]
    expect: Vec<Chain>,
    /// `text` for people, `json` for tools.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Decision log files, oldest first.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

fn parse_expect(s: &str) -> Result<Chain, String> {
    let (seq, hash) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not SEQ:HASH"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("`{seq}` is not a seq (a whole number)"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("`{hash}` is not a hash (64 hex digits)"));
    }
    Ok(Chain {
        seq,
        head: hash.to_ascii_lowercase(),
    })
}

pub fn verify_log(args: VerifyLogArgs) -> ExitCode {
    let keys: Result<Vec<PublicKey>, String> = args
        .public_keys
        .iter()
        .map(|p| PublicKey::from_file(p))
        .collect();
    let keys = match keys {
        Ok(k) => k,
        Err(e) => {
            err(&format!("error: --public-key {e}"));
            return ExitCode::from(2);
        }
    };
    let keyed = !keys.is_empty();
    let opts = Options {
        keys,
        origin: args.origin,
        allow_open_end: args.allow_open_end,
        expect: args.expect,
    };
    let v = match verify::verify(&args.files, &opts) {
        Ok(v) => v,
        Err(e) => {
            err(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    let ok = v.failure.is_none() && v.lines > 0;
    if args.format == ReportFormat::Json {
        let mut json = serde_json::to_value(&v).unwrap_or_default();
        if let Some(map) = json.as_object_mut() {
            map.insert("ok".into(), ok.into());
        }
        out(&serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        print_text(&v, keyed);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_text(v: &Verification, keyed: bool) {
    for f in &v.files {
        if f.lines > 0 {
            out(&format!(
                "{}: {}, seq {} to {}",
                f.path.display(),
                plural(f.lines as usize, "line", "lines"),
                f.first_seq,
                f.last_seq
            ));
        } else if v.failure.as_ref().is_none_or(|b| b.path != f.path) {
            out(&format!("{}: empty", f.path.display()));
        }
    }
    for note in &v.notes {
        out(&format!("note: {note}"));
    }
    if v.notes_not_listed > 0 {
        out(&format!(
            "note: and {} more",
            plural(v.notes_not_listed as usize, "note", "notes")
        ));
    }
    if let Some(failure) = &v.failure {
        out(&format!("FAIL: {failure}"));
        out(&format!(
            "verified before it: {}",
            plural(v.lines as usize, "line", "lines")
        ));
        return;
    }
    let files_word = plural(v.files.len(), "file", "files");
    if v.lines == 0 {
        out(&format!("FAIL: {files_word} with no line to verify"));
        return;
    }
    let from = if v.follows_seq > 0 {
        format!(" (continuing seq {} of a file not given)", v.follows_seq)
    } else {
        String::new()
    };
    out(&format!(
        "OK: {} in {files_word}, seq {} to {}{from}",
        plural(v.lines as usize, "line", "lines"),
        v.follows_seq.saturating_add(1),
        v.head.seq,
    ));
    out(&format!("head: {}", v.head.head));
    if let Some(origin) = &v.origin {
        out(&format!("origin: {origin}"));
    }
    let tail = if v.unsigned_tail > 0 {
        format!(
            "; the last {} after the last checkpoint {} not signed yet",
            plural(v.unsigned_tail as usize, "line", "lines"),
            if v.unsigned_tail == 1 { "is" } else { "are" }
        )
    } else {
        String::new()
    };
    let end = if v.closed { "; closed" } else { "; open" };
    if !keyed {
        if v.checkpoints == 0 {
            out("signatures: none (the log has no checkpoints)");
        } else {
            out(&format!(
                "signatures: {}, not verified (give --public-key){tail}",
                plural(v.checkpoints as usize, "checkpoint", "checkpoints")
            ));
        }
        return;
    }
    out(&format!(
        "signatures: {} verified, signed by key {}{tail}{end}",
        plural(v.signed as usize, "checkpoint", "checkpoints"),
        v.signers.join(", ")
    ));
}
