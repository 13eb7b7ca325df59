//! "Did you mean" for misspelled ids and keys.

/// The declared name closest to `wanted`, if one is close enough to be a
/// likely typo. Bounded work: names whose length differs by more than the
/// allowed distance are skipped without comparing, and over-long input gets
/// no suggestion, so an attacker's garbage id costs little.
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
    let mut best: Option<(usize, &'a str)> = None;
    for name in declared {
        let len = name.chars().count();
        if len.abs_diff(wanted_len) > max_distance {
            continue;
        }
        let distance = if name.to_lowercase() == wanted_lower {
            0
        } else {
            levenshtein(wanted, name)
        };
        if distance <= max_distance && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, name));
        }
    }
    best.map(|(_, name)| name)
}

/// ` (did you mean `x`?)` or nothing.
pub fn did_you_mean<'a>(wanted: &str, declared: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(wanted, declared) {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None => String::new(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        if let Some(first) = current.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let substitution =
                previous.get(j).copied().unwrap_or(usize::MAX) + usize::from(ca != *cb);
            let deletion = previous.get(j + 1).copied().unwrap_or(usize::MAX) + 1;
            let insertion = current.get(j).copied().unwrap_or(usize::MAX) + 1;
            if let Some(slot) = current.get_mut(j + 1) {
                *slot = substitution.min(deletion).min(insertion);
            }
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous.last().copied().unwrap_or(0)
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
    fn distance_counts_edits() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
