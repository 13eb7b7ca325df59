//! "Did you mean" for misspelled ids and keys.

use std::cell::Cell;

/// Suggestions one load may compute: a file with thousands of unknown ids
/// gets hints for the first ones only, not minutes of comparisons.
pub const MAX_SUGGESTIONS: usize = 50;
/// Declared names one suggestion compares, at most (after the cheap
/// length filter).
const MAX_CANDIDATES: usize = 1_000;

thread_local! {
    /// Suggestions left in the current load; unlimited outside one.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs `work` (a load) with at most [`MAX_SUGGESTIONS`] suggestions.
pub fn budgeted<T>(work: impl FnOnce() -> T) -> T {
    let before = LEFT.with(|left| left.replace(Some(MAX_SUGGESTIONS)));
    let result = work();
    LEFT.with(|left| left.set(before));
    result
}

/// Takes one suggestion from the budget; false when none is left.
fn spend() -> bool {
    LEFT.with(|left| match left.get() {
        None => true,
        Some(0) => false,
        Some(n) => {
            left.set(Some(n - 1));
            true
        }
    })
}

/// The declared name closest to `wanted`, if one is close enough to be a
/// likely typo. Bounded work: names whose length differs by more than the
/// allowed distance are skipped without comparing, at most
/// [`MAX_CANDIDATES`] are compared, each within a band of the allowed
/// distance, and over-long input gets no suggestion, so an attacker's
/// garbage id costs little.
pub fn nearest<'a>(wanted: &str, declared: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    const MAX_INPUT: usize = 256;
    let wanted_len = wanted.chars().count();
    if wanted_len == 0 || wanted_len > MAX_INPUT {
        return None;
    }
    let max_distance = match wanted_len {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let wanted_lower = wanted.to_lowercase();
    let wanted_chars: Vec<char> = wanted.chars().collect();
    let mut name_chars: Vec<char> = Vec::new();
    let mut rows = (Vec::new(), Vec::new());
    let mut best: Option<(usize, &'a str)> = None;
    let mut compared = 0;
    for name in declared {
        // Only a name nearer than the best so far can replace it (the
        // first of equals wins): the band narrows as better names are
        // found, so a likely typo among thousands of alike names costs
        // little more than the first close one.
        let max_distance = match best {
            Some((0, _)) => break,
            Some((d, _)) => d - 1,
            None => max_distance,
        };
        // Byte length first: a cheap bound (a char is 1 to 4 bytes).
        if name.len() + 3 * max_distance < wanted_len
            || name.len() > 4 * (wanted_len + max_distance)
        {
            continue;
        }
        name_chars.clear();
        name_chars.extend(name.chars());
        if name_chars.len().abs_diff(wanted_len) > max_distance {
            continue;
        }
        compared += 1;
        if compared > MAX_CANDIDATES {
            break;
        }
        let same_but_case = if name.is_ascii() && wanted.is_ascii() {
            name.eq_ignore_ascii_case(wanted)
        } else {
            name.to_lowercase() == wanted_lower
        };
        let distance = if same_but_case {
            Some(0)
        } else {
            levenshtein_within(&wanted_chars, &name_chars, max_distance, &mut rows)
        };
        if let Some(distance) = distance {
            if best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, name));
            }
        }
    }
    best.map(|(_, name)| name)
}

/// ` (did you mean `x`?)` or nothing (also when the load's suggestions
/// are spent).
pub fn did_you_mean<'a>(wanted: &str, declared: impl IntoIterator<Item = &'a str>) -> String {
    if !spend() {
        return String::new();
    }
    match nearest(wanted, declared) {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None => String::new(),
    }
}

/// The edit distance of `a` and `b` if it is at most `max`: only cells
/// within `max` of the diagonal are computed, and a row whose every cell
/// exceeds `max` ends the work. `rows` is scratch space, reused.
fn levenshtein_within(
    a: &[char],
    b: &[char],
    max: usize,
    rows: &mut (Vec<usize>, Vec<usize>),
) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let over = max + 1;
    let (previous, current) = rows;
    previous.clear();
    previous.extend((0..=b.len()).map(|j| j.min(over)));
    current.clear();
    current.resize(b.len() + 1, over);
    for (i, ca) in a.iter().enumerate() {
        let row = i + 1;
        let from = row.saturating_sub(max).max(1);
        let to = (row + max).min(b.len());
        current.fill(over);
        if let Some(first) = current.first_mut() {
            *first = row.min(over);
        }
        let mut row_min = current.first().copied().unwrap_or(over);
        for j in from..=to {
            let cb = b.get(j - 1);
            let substitution =
                previous.get(j - 1).copied().unwrap_or(over) + usize::from(Some(ca) != cb);
            let deletion = previous.get(j).copied().unwrap_or(over) + 1;
            let insertion = current.get(j - 1).copied().unwrap_or(over) + 1;
            let cell = substitution.min(deletion).min(insertion).min(over);
            if let Some(slot) = current.get_mut(j) {
                *slot = cell;
            }
            row_min = row_min.min(cell);
        }
        if row_min > max {
            return None;
        }
        std::mem::swap(previous, current);
    }
    previous.get(b.len()).copied().filter(|&d| d <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_declared_id() {
        let declared = ["lbo", "lbo.billing", "lbo.compensation", "provide"];
        assert_eq!(nearest("lbo.biling", declared), Some("lbo.billing"));
        assert_eq!(nearest("Provide", declared), Some("provide"));
        assert_eq!(nearest("provdie", declared), Some("provide"));
        assert_eq!(nearest("zzzzzzzzzz", declared), None);
        assert_eq!(nearest("", declared), None);
    }

    #[test]
    fn distance_counts_edits_within_a_bound() {
        let d = |a: &str, b: &str, max| {
            let a: Vec<char> = a.chars().collect();
            let b: Vec<char> = b.chars().collect();
            levenshtein_within(&a, &b, max, &mut (Vec::new(), Vec::new()))
        };
        assert_eq!(d("kitten", "sitting", 3), Some(3));
        assert_eq!(d("kitten", "sitting", 2), None);
        assert_eq!(d("", "abc", 3), Some(3));
        assert_eq!(d("same", "same", 1), Some(0));
        assert_eq!(d("lbo.biling", "lbo.billing", 3), Some(1));
        assert_eq!(d("abcdef", "fedcba", 3), None);
        assert_eq!(d("ümlaut", "umlaut", 1), Some(1));
    }

    #[test]
    fn a_load_spends_a_bounded_number_of_suggestions() {
        let declared = ["provide"];
        let hints = budgeted(|| {
            (0..MAX_SUGGESTIONS + 10)
                .filter(|_| !did_you_mean("provdie", declared).is_empty())
                .count()
        });
        assert_eq!(hints, MAX_SUGGESTIONS);
        // Outside a load, no budget.
        assert!(!did_you_mean("provdie", declared).is_empty());
    }
}
