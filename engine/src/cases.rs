//! Policy test cases: a YAML file of requests with the decision each must
//! get, run by `purposegate-server test` and by the engine's own tests.
//!
//! ```yaml
//! cases:
//!   - name: customer data may be used to provide the service
//!     request:
//!       purpose: provide
//!       subject: { id: crm }
//!       resource: { category: customer-data }
//!     decision: PERMIT
//!     ruleIds: [online-services]      # optional: exactly these rules
//!     reasonContains: permitted       # optional
//!     monitor: DENY                   # optional: the monitor decision, or NONE
//!     obligations: [log-access]       # optional: exactly these obligation ids
//! ```

use std::fmt::Write as _;
use std::sync::Arc;

use super::choices::{Choice, ChoiceFacts, ChoiceState};
use super::decision::{Decision, Evaluation};
use super::decode::Decoder;
use super::diagnostic::{Diagnostic, Diagnostics, Span};
use super::policy::Policy;
use super::request::{DecisionRequest, decode_request};
use super::yaml::{self, Node};

/// One expectation.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub span: Span,
    pub request: DecisionRequest,
    pub decision: Decision,
    pub rule_ids: Option<Vec<String>>,
    pub reason_contains: Option<String>,
    /// `Some(None)`: no monitor result expected.
    pub monitor: Option<Option<Decision>>,
    pub obligations: Option<Vec<String>>,
    /// The choices the case decides on (`choices:`): none looked up when
    /// absent, so a decision that needs them is `INDETERMINATE`.
    pub choices: ChoiceFacts,
}

/// A loaded case file.
#[derive(Debug, Clone)]
pub struct CaseFile {
    pub file: Arc<str>,
    pub cases: Vec<Case>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult<'c> {
    pub case: &'c Case,
    pub got: Evaluation,
    /// What did not match; empty when the case passed.
    pub mismatches: Vec<String>,
}

impl CaseResult<'_> {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

const CASE_KEYS: &[&str] = &[
    "name",
    "request",
    "decision",
    "ruleIds",
    "reasonContains",
    "monitor",
    "obligations",
    "choices",
];

impl CaseFile {
    /// Parses a case file, reporting every problem at once.
    pub fn parse(file: &str, text: &str) -> Result<CaseFile, Diagnostics> {
        let in_line_order = |mut d: Vec<Diagnostic>| {
            d.sort_by_key(|d| (d.span.line, d.span.column));
            Diagnostics(d)
        };
        let root = yaml::parse(file, text).map_err(in_line_order)?;
        let mut d = Decoder::new(file);
        let mut cases = Vec::new();
        if let Some(top) = d.fields(&root, "case file", &["description", "cases"]) {
            if let Some(n) = top.get("description") {
                d.string(n, "`description`");
            }
            match top.get("cases") {
                None => d.error(root.span, "missing `cases`"),
                Some(n) => {
                    if let Some(items) = d.seq(n, "`cases`") {
                        for (i, item) in items.iter().enumerate() {
                            if let Some(case) = decode_case(&mut d, item, i) {
                                cases.push(case);
                            }
                        }
                    }
                }
            }
        }
        if d.sink.diagnostics.is_empty() {
            Ok(CaseFile {
                file: Arc::from(file),
                cases,
            })
        } else {
            Err(in_line_order(d.sink.diagnostics))
        }
    }

    /// Runs every case against `policy`.
    pub fn run<'c>(&'c self, policy: &Policy) -> Vec<CaseResult<'c>> {
        self.cases
            .iter()
            .map(|case| {
                let got = policy.evaluate_with(&case.request, &case.choices);
                let mismatches = case.mismatches(&got);
                CaseResult {
                    case,
                    got,
                    mismatches,
                }
            })
            .collect()
    }
}

impl Case {
    fn mismatches(&self, got: &Evaluation) -> Vec<String> {
        let mut out = Vec::new();
        if got.decision != self.decision {
            out.push(format!("got {}, want {}", got.decision, self.decision));
        }
        if let Some(want) = &self.rule_ids {
            let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
            let mut have: Vec<&str> = got.rule_ids.iter().map(|r| &**r).collect();
            want.sort_unstable();
            have.sort_unstable();
            if want != have {
                out.push(format!("got rule ids {have:?}, want {want:?}"));
            }
        }
        if let Some(want) = &self.reason_contains {
            if !got.reason.to_string().contains(want.as_str()) {
                out.push(format!("reason does not contain {want:?}"));
            }
        }
        if let Some(want) = self.monitor {
            let have = got.monitor.as_ref().map(|m| m.decision);
            if have != want {
                let show = |d: Option<Decision>| d.map_or("NONE", Decision::as_str);
                out.push(format!("got monitor {}, want {}", show(have), show(want)));
            }
        }
        if let Some(want) = &self.obligations {
            let have: Vec<&str> = got.obligations.iter().map(|o| &*o.id).collect();
            if have != want.iter().map(String::as_str).collect::<Vec<_>>() {
                out.push(format!("got obligations {have:?}, want {want:?}"));
            }
        }
        out
    }
}

impl CaseResult<'_> {
    /// `file:line: name: got DENY, want PERMIT (rules: [..]; reason: ..)`
    pub fn describe_failure(&self, file: &str) -> String {
        let mut out = format!(
            "FAIL {file}:{} {}: {}",
            self.case.span.line,
            self.case.name,
            self.mismatches.join("; ")
        );
        let rules: Vec<&str> = self.got.rule_ids.iter().map(|r| &**r).collect();
        let _ = write!(out, " (rules: {rules:?}; reason: {})", self.got.reason);
        out
    }
}

fn decode_case(d: &mut Decoder<'_>, node: &Node, i: usize) -> Option<Case> {
    let f = d.fields(node, &format!("case #{}", i + 1), CASE_KEYS)?;
    let name = match f.get("name") {
        Some(n) => d.text(n, &format!("case #{} `name`", i + 1))?,
        None => format!("case #{}", i + 1),
    };
    let what = format!("case `{name}`");
    let decision = |d: &mut Decoder<'_>, n: &Node, key: &str| -> Option<Decision> {
        let s = d.string(n, &format!("{what}: `{key}`"))?;
        let parsed = Decision::parse(&s);
        if parsed.is_none() {
            d.error(
                n.span,
                format!(
                    "{what}: unknown decision `{s}`; expected PERMIT, DENY, NOT_APPLICABLE or INDETERMINATE"
                ),
            );
        }
        parsed
    };
    let request = match f.get("request") {
        Some(n) => decode_request(d, n),
        None => {
            d.error(node.span, format!("{what}: missing `request`"));
            None
        }
    };
    let want = match f.get("decision") {
        Some(n) => decision(d, n, "decision"),
        None => {
            d.error(node.span, format!("{what}: missing `decision`"));
            None
        }
    };
    let rule_ids = f.get("ruleIds").map(|n| {
        d.strings(n, &format!("{what}: `ruleIds`"))
            .unwrap_or_default()
    });
    let reason_contains = f
        .get("reasonContains")
        .and_then(|n| d.text(n, &format!("{what}: `reasonContains`")));
    let monitor = match f.get("monitor") {
        None => None,
        Some(n) => match d.string(n, &format!("{what}: `monitor`")).as_deref() {
            Some("NONE" | "none") => Some(None),
            Some(_) => decision(d, n, "monitor").map(Some),
            None => None,
        },
    };
    let obligations = f
        .get("obligations")
        .and_then(|n| d.strings(n, &format!("{what}: `obligations`")));
    let choices = match f.get("choices") {
        Some(n) => decode_choices(d, n, &what)?,
        None => ChoiceFacts::none(),
    };
    Some(Case {
        name,
        span: node.span,
        request: request?,
        decision: want?,
        rule_ids,
        reason_contains,
        monitor,
        obligations,
        choices,
    })
}

/// A case's `choices`: `tenant:` and `dataSubject:`, each a map of purpose
/// to state (`granted`, `withdrawn`, `objected`), and `restricted: true`
/// for a restricted data subject; recorded a moment before the case is
/// decided, never expiring. Present, even empty, it says what the store
/// holds: nothing recorded is then a fact, not a lookup that failed.
fn decode_choices(d: &mut Decoder<'_>, n: &Node, what: &str) -> Option<ChoiceFacts> {
    let f = d.fields(
        n,
        &format!("{what}: `choices`"),
        &["tenant", "dataSubject", "restricted"],
    )?;
    // A fixed time: a case decides the same today and in ten years.
    const AT: i64 = 1_767_225_600;
    let mut list = |key: &str| -> Vec<Choice> {
        let Some(node) = f.get(key) else {
            return Vec::new();
        };
        let label = format!("{what}: `choices.{key}`");
        d.string_map(node, &label)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(purpose, state)| match ChoiceState::parse(&state) {
                Some(
                    state @ (ChoiceState::Granted | ChoiceState::Withdrawn | ChoiceState::Objected),
                ) => Some(Choice {
                    purpose,
                    state,
                    at: AT,
                    expires_at: None,
                }),
                _ => {
                    d.error(
                        node.span,
                        format!("{label}: `{state}` is not granted, withdrawn or objected"),
                    );
                    None
                }
            })
            .collect()
    };
    let tenant = list("tenant");
    let mut subject = list("dataSubject");
    if let Some(r) = f.get("restricted") {
        if d.bool(r, &format!("{what}: `choices.restricted`")) == Some(true) {
            subject.push(Choice {
                purpose: String::new(),
                state: ChoiceState::Restricted,
                at: AT,
                expires_at: None,
            });
        }
    }
    Some(ChoiceFacts {
        now: AT + 1,
        revision: 0,
        tenant: Some(tenant),
        subject: Some(subject),
    })
}
