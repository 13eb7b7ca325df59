//! `replay`: asks every logged question again under another policy and
//! counts what would be decided otherwise, by kind (a denial that becomes
//! a permit first) and by purpose × category cell, with an example of
//! each; a line that cannot be asked again says why.
//!
//! A decision line carries the whole question (`audit::line`); fields the
//! log redacted are missing. A dropped field the policy reads makes the
//! line unreplayable (the answer could depend on it); hashed tenants (both
//! the subject's and the owner's) and a hashed customer instruction are
//! replayed as they are, since the policy only compares the two tenants
//! and asks whether an instruction is present.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::audit::line::Field;
use crate::engine::{Decision, DecisionRequest, Deidentification, Fact, Policy};

/// Distinct cells, revisions and reasons kept apart in a report; the rest
/// are counted together, so memory does not grow with what a hostile log
/// makes distinct.
const MAX_DISTINCT: usize = 1_000;
/// Examples kept per kind and per cell, and unreplayable lines shown.
const EXAMPLES: usize = 3;

/// Where a line is.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub file: String,
    pub line: u64,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One logged decision decided otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    #[serde(flatten)]
    pub place: Place,
    pub request: DecisionRequest,
    pub was: Decision,
    pub was_rule_ids: Vec<String>,
    pub now: Decision,
    pub now_rule_ids: Vec<String>,
    pub now_reason: String,
}

/// Flips of one kind (`DENY` → `PERMIT`, say).
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub from: Decision,
    pub to: Decision,
    /// Decisions (a folded line counts each of its decisions).
    pub decisions: u64,
    pub examples: Vec<Example>,
}

/// Flips on one purpose × category cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellFlips {
    pub purpose: String,
    pub category: String,
    pub from: Decision,
    pub to: Decision,
    pub decisions: u64,
}

/// A line that could not be asked again, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unreplayed {
    #[serde(flatten)]
    pub place: Place,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Replay {
    pub policy: String,
    pub revision: String,
    /// Decisions asked again (a folded line counts each).
    pub decisions: u64,
    /// Decision lines asked again.
    pub lines: u64,
    /// Decisions by the revision that made them.
    pub logged_revisions: BTreeMap<String, u64>,
    /// Decisions decided otherwise now.
    pub flipped: u64,
    /// Of them, a refusal now permitted.
    pub newly_permitted: u64,
    /// Kinds of flips: those to `PERMIT` first, then those from it.
    pub flips: Vec<Flip>,
    pub cells: Vec<CellFlips>,
    /// Lines that are not decisions: chain, checkpoint and drop lines.
    pub other_lines: u64,
    /// Decisions the log says it dropped (never written, so not replayed).
    pub dropped_in_log: u64,
    pub unreplayed: u64,
    /// The first lines not replayed.
    pub unreplayed_lines: Vec<Unreplayed>,
    /// Why lines were not replayed, and how many each.
    pub unreplayed_reasons: BTreeMap<String, u64>,
    /// Decisions whose revision was past the first 1,000 distinct ones:
    /// counted, not listed.
    pub revisions_not_listed: u64,
    /// Flipped decisions whose cell was past the first 1,000.
    pub cells_not_listed: u64,
    /// Lines not replayed whose reason was past the first 1,000.
    pub reasons_not_listed: u64,
}

/// A key as listed: at most 256 bytes, so a hostile log's keys cost no
/// more than the cap of distinct ones allows.
fn listed(mut key: String) -> String {
    if key.len() > 256 {
        let mut end = 256;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
        key.push('…');
    }
    key
}

/// Adds `n` to `key`'s count, unless `map` already holds
/// [`MAX_DISTINCT`] other keys: then to `other`.
fn count<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, n: u64, other: &mut u64) {
    if map.len() >= MAX_DISTINCT && !map.contains_key(&key) {
        *other = other.saturating_add(n);
        return;
    }
    let entry = map.entry(key).or_default();
    *entry = entry.saturating_add(n);
}

/// Replays `files` under `policy`. An error is a file that cannot be read.
pub fn replay(policy: &Policy, files: &[PathBuf]) -> Result<Replay, String> {
    let mut out = Replay {
        policy: policy.name().to_string(),
        revision: policy.revision().to_string(),
        ..Replay::default()
    };
    let mut flips: BTreeMap<(Decision, Decision), Flip> = BTreeMap::new();
    let mut cells: BTreeMap<(String, String, Decision, Decision), u64> = BTreeMap::new();
    for path in files {
        replay_file(policy, path, &mut out, &mut flips, &mut cells)?;
    }
    let rank = |f: &Flip| match (f.from, f.to) {
        (_, Decision::Permit) => 0,
        (Decision::Permit, _) => 1,
        _ => 2,
    };
    let mut flips: Vec<Flip> = flips.into_values().collect();
    flips.sort_by(|a, b| rank(a).cmp(&rank(b)).then(b.decisions.cmp(&a.decisions)));
    out.flips = flips;
    let mut cells: Vec<CellFlips> = cells
        .into_iter()
        .map(|((purpose, category, from, to), decisions)| CellFlips {
            purpose,
            category,
            from,
            to,
            decisions,
        })
        .collect();
    cells.sort_by(|a, b| {
        let to_permit = |c: &CellFlips| c.to != Decision::Permit;
        to_permit(a)
            .cmp(&to_permit(b))
            .then(b.decisions.cmp(&a.decisions))
    });
    out.cells = cells;
    Ok(out)
}

fn replay_file(
    policy: &Policy,
    path: &Path,
    out: &mut Replay,
    flips: &mut BTreeMap<(Decision, Decision), Flip>,
    cells: &mut BTreeMap<(String, String, Decision, Decision), u64>,
) -> Result<(), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = crate::audit::lines::LineReader::new(file);
    let name = path.display().to_string();
    loop {
        let Some(raw) = lines
            .next_line()
            .map_err(|e| format!("cannot read {name}: {e}"))?
        else {
            return Ok(());
        };
        let place = Place {
            file: name.clone(),
            line: raw.number,
        };
        if raw.oversized {
            // Stepped over: the lines after it are read as ever.
            not_replayed(
                out,
                place,
                format!(
                    "a line of {} bytes, over 1 MiB: not a line the server writes",
                    raw.len
                ),
            );
            continue;
        }
        let bytes = raw.bytes;
        let line = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(line)) => line,
            Ok(_) | Err(_) if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Ok(_) => {
                not_replayed(out, place, "not a JSON object".into());
                continue;
            }
            Err(e) => {
                not_replayed(out, place, format!("not JSON ({e})"));
                continue;
            }
        };
        if line.contains_key("truncated") {
            not_replayed(
                out,
                place,
                "cut when it was logged (the request's line was over 64 KiB): its question \
                 is not whole"
                    .into(),
            );
            continue;
        }
        if line.contains_key("batch") {
            match crate::audit::batch::expand(&line) {
                Ok(items) => {
                    let mut replayed = false;
                    for item in items {
                        replayed |= replay_line(policy, place.clone(), &item, out, flips, cells);
                    }
                    out.lines += u64::from(replayed);
                }
                Err(why) => not_replayed(out, place, why),
            }
            continue;
        }
        if !line.contains_key("decision") {
            out.other_lines += 1;
            out.dropped_in_log += line.get("dropped").and_then(Value::as_u64).unwrap_or(0);
            continue;
        }
        if replay_line(policy, place, &line, out, flips, cells) {
            out.lines += 1;
        }
    }
}

/// Replays one decision line (or one of a batch's decisions, expanded);
/// whether it could be.
fn replay_line(
    policy: &Policy,
    place: Place,
    line: &serde_json::Map<String, Value>,
    out: &mut Replay,
    flips: &mut BTreeMap<(Decision, Decision), Flip>,
    cells: &mut BTreeMap<(String, String, Decision, Decision), u64>,
) -> bool {
    let logged = match Logged::read(line) {
        Ok(l) => l,
        Err(why) => {
            not_replayed(out, place, why);
            return false;
        }
    };
    if let Some(why) = logged.lacks(policy) {
        not_replayed(out, place, why);
        return false;
    }
    // The choices the decision read, as they were: no store is needed.
    let now = match &logged.choices {
        Some(choices) => policy.evaluate_with(&logged.request, choices),
        None => policy.evaluate(&logged.request),
    };
    out.decisions = out.decisions.saturating_add(logged.count);
    count(
        &mut out.logged_revisions,
        listed(logged.revision.clone()),
        logged.count,
        &mut out.revisions_not_listed,
    );
    if now.decision == logged.decision {
        return true;
    }
    out.flipped = out.flipped.saturating_add(logged.count);
    if now.decision == Decision::Permit {
        out.newly_permitted = out.newly_permitted.saturating_add(logged.count);
    }
    let flip = flips
        .entry((logged.decision, now.decision))
        .or_insert_with(|| Flip {
            from: logged.decision,
            to: now.decision,
            decisions: 0,
            examples: Vec::new(),
        });
    flip.decisions = flip.decisions.saturating_add(logged.count);
    let cell = (
        listed(logged.request.purpose.clone()),
        listed(logged.request.resource.category.clone()),
        logged.decision,
        now.decision,
    );
    count(cells, cell, logged.count, &mut out.cells_not_listed);
    if flip.examples.len() < EXAMPLES {
        flip.examples.push(Example {
            place,
            was: logged.decision,
            was_rule_ids: logged.rule_ids,
            now: now.decision,
            now_rule_ids: now.rule_ids.iter().map(|r| r.to_string()).collect(),
            now_reason: now.reason.to_string(),
            request: logged.request,
        });
    }
    true
}

fn not_replayed(out: &mut Replay, place: Place, why: String) {
    out.unreplayed += 1;
    let kind = listed(why.split(" (").next().unwrap_or(&why).to_string());
    count(
        &mut out.unreplayed_reasons,
        kind,
        1,
        &mut out.reasons_not_listed,
    );
    if out.unreplayed_lines.len() < EXAMPLES * 4 {
        out.unreplayed_lines.push(Unreplayed { place, why });
    }
}

/// A decision line read back.
struct Logged {
    request: DecisionRequest,
    decision: Decision,
    rule_ids: Vec<String>,
    revision: String,
    count: u64,
    /// Fields the log redacted, and how.
    redacted: BTreeMap<Field, String>,
    /// The choices the decision read, as logged.
    choices: Option<crate::engine::ChoiceFacts>,
}

impl Logged {
    fn read(line: &serde_json::Map<String, Value>) -> Result<Self, String> {
        let text = |key: &str| -> Result<String, String> {
            match line.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("`{key}` is not a string")),
            }
        };
        let list = |key: &str| -> Result<Vec<String>, String> {
            match line.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("`{key}` is not a list of strings")),
                Some(_) => Err(format!("`{key}` is not a list")),
            }
        };
        let map = |key: &str| -> Result<BTreeMap<String, String>, String> {
            match line.get(key) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect::<Option<BTreeMap<_, _>>>()
                    .ok_or_else(|| format!("`{key}` is not a map of strings")),
                Some(_) => Err(format!("`{key}` is not a map")),
            }
        };
        let decision = Decision::parse(&text("decision")?).ok_or("`decision` is not a decision")?;
        let mut request = DecisionRequest {
            purpose: text("purpose")?,
            inherited_purpose: text("inherited_purpose")?,
            action: text("action")?,
            request_id: text("request_id")?,
            supported_obligations: list("supported_obligations")?,
            ..DecisionRequest::default()
        };
        request.subject.id = text("subject")?;
        request.subject.tenant = text("tenant")?;
        request.subject.roles = list("roles")?;
        request.resource.category = text("category")?;
        request.resource.owner_tenant = text("owner_tenant")?;
        request.resource.data_subject = text("data_subject")?;
        request.resource.origin = list("origin")?;
        request.resource.attributes = map("resource_attributes")?;
        let resource_id = text("resource_id")?;
        if !resource_id.is_empty() {
            request
                .resource
                .attributes
                .entry("id".into())
                .or_insert(resource_id);
        }
        let state = text("deidentification")?;
        if !state.is_empty() {
            request.resource.deidentification = Some(
                Deidentification::parse(&state)
                    .ok_or_else(|| format!("`deidentification` `{state}` is not a state"))?,
            );
        }
        request.resource.group_size = match line.get("group_size") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or("`group_size` is not a number")?),
        }
        .filter(|&k| k != 0);
        request.context.customer_instruction = text("customer_instruction")?;
        request.context.attributes = map("context_attributes")?;
        if let Err(invalid) = request.validate() {
            return Err(format!("not a question the server decides ({invalid})"));
        }
        let mut redacted = BTreeMap::new();
        for (key, how) in map("redacted")? {
            let field = Field::from_key(&key)
                .ok_or_else(|| format!("`redacted` names `{key}`, not a field"))?;
            redacted.insert(field, how);
        }
        let count = match line.get("count") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .ok_or("`count` is not a count")?,
        };
        let choices = match line.get("choices") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| format!("`choices` is not the choices a decision read ({e})"))?,
            ),
        };
        Ok(Logged {
            choices,
            request,
            decision,
            rule_ids: list("rule_ids")?,
            revision: text("revision")?,
            count,
            redacted,
        })
    }

    /// Why the line cannot be asked again under `policy`: a field it
    /// lacks that the policy reads.
    fn lacks(&self, policy: &Policy) -> Option<String> {
        let hashed = |f: Field| self.redacted.get(&f).is_some_and(|h| h == "hash");
        let mut lacking: BTreeSet<&'static str> = BTreeSet::new();
        for (&field, how) in &self.redacted {
            let fact = match field {
                Field::RequestId | Field::Action => continue,
                // Read only where the policy makes purposes depend on choices.
                Field::DataSubject if policy.choices().is_empty() || how == "hash" => continue,
                Field::DataSubject => {
                    lacking.insert(field.key());
                    continue;
                }
                Field::Subject => Fact::SubjectId,
                Field::Roles => Fact::SubjectRoles,
                // Equal tenants hash alike: hashing both keeps the answer.
                Field::Tenant | Field::OwnerTenant
                    if hashed(Field::Tenant) && hashed(Field::OwnerTenant) =>
                {
                    continue;
                }
                Field::Tenant | Field::OwnerTenant => Fact::Tenancy,
                Field::Deidentification => Fact::Deidentification,
                Field::GroupSize => Fact::GroupSize,
                Field::Origin => Fact::Origin,
                Field::ResourceId | Field::ResourceAttributes => Fact::ResourceAttributes,
                // Present stays present, absent absent.
                Field::CustomerInstruction if how == "hash" => continue,
                Field::CustomerInstruction => Fact::CustomerInstruction,
                Field::ContextAttributes => Fact::ContextAttributes,
                Field::SupportedObligations => Fact::SupportedObligations,
            };
            if policy.reads(fact) {
                lacking.insert(field.key());
            }
        }
        if lacking.is_empty() {
            return None;
        }
        let names: Vec<String> = lacking.iter().map(|k| format!("`{k}`")).collect();
        Some(format!(
            "lacks {} (redacted by the log), which the policy reads",
            names.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_past_the_cap_are_counted_not_kept() {
        let mut map = BTreeMap::new();
        let mut other = 0;
        for i in 0..MAX_DISTINCT + 500 {
            count(&mut map, format!("rev-{i}"), 2, &mut other);
        }
        assert_eq!(map.len(), MAX_DISTINCT);
        assert_eq!(other, 1000);
        // A key already kept still counts as itself.
        count(&mut map, "rev-0".to_string(), 5, &mut other);
        assert_eq!(map["rev-0"], 7);
        assert_eq!(other, 1000);
        assert_eq!(listed("é".repeat(300)).len(), 256 + '…'.len_utf8());
    }
}
