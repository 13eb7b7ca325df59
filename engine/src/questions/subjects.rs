//! Subject ids for the diff: one id for each way the claims' patterns and
//! the ids `subject.id` conditions list can match an id together.
//!
//! Each group (the patterns of one policy's claims on the purpose, or the
//! ids of one condition) matches an id when any of its patterns does. The
//! groups' patterns are read as one automaton each (a set of positions per
//! pattern, as [`crate::glob`] matches: `*` any run, `?` any one
//! character, a listed id only itself), and their product is walked
//! breadth first over the characters the patterns name and one they do
//! not: every set of groups some id matches is reached, by a shortest
//! id. Bounded by [`MAX_STATES`].

use std::collections::{BTreeSet, HashSet, VecDeque};

/// Most states of the patterns' product walked for one cell.
pub const MAX_STATES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: any run of characters.
    Run,
    /// `?`: any one character.
    One,
}

/// A pattern: a glob of `claims`, or an id listed in a condition.
#[derive(Debug, Clone)]
pub(super) struct Pattern(Vec<Token>);

impl Pattern {
    pub(super) fn glob(text: &str) -> Self {
        Pattern(
            text.chars()
                .map(|c| match c {
                    '*' => Token::Run,
                    '?' => Token::One,
                    c => Token::Char(c),
                })
                .collect(),
        )
    }

    pub(super) fn literal(text: &str) -> Self {
        Pattern(text.chars().map(Token::Char).collect())
    }

    /// The positions reachable from `set` without reading: past each `*`.
    fn closure(&self, mut set: Vec<usize>) -> Vec<usize> {
        let mut i = 0;
        while let Some(&pos) = set.get(i) {
            if self.0.get(pos) == Some(&Token::Run) && !set.contains(&(pos + 1)) {
                set.push(pos + 1);
            }
            i += 1;
        }
        set.sort_unstable();
        set
    }

    fn step(&self, set: &[usize], c: char) -> Vec<usize> {
        let next = set
            .iter()
            .filter_map(|&pos| match self.0.get(pos)? {
                Token::Run => Some(pos),
                Token::One => Some(pos + 1),
                Token::Char(d) => (*d == c).then_some(pos + 1),
            })
            .collect();
        let mut next = self.closure(next);
        next.dedup();
        next
    }

    fn accepts(&self, set: &[usize]) -> bool {
        set.contains(&self.0.len())
    }
}

/// Non-empty ids, one for each set of `groups` some non-empty id matches
/// (none of them among it); `Err` with the states walked past
/// [`MAX_STATES`].
pub(super) fn witnesses(groups: &[Vec<Pattern>]) -> Result<Vec<String>, usize> {
    let patterns: Vec<(usize, &Pattern)> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, list)| list.iter().map(move |p| (g, p)))
        .collect();
    let mut alphabet: BTreeSet<char> = BTreeSet::new();
    for (_, p) in &patterns {
        alphabet.extend(p.0.iter().filter_map(|t| match t {
            Token::Char(c) => Some(*c),
            _ => None,
        }));
    }
    // A character no pattern names stands for all of them.
    if let Some(other) = ('a'..='z')
        .chain('0'..='9')
        .chain(['-', '_', '.', '~', '\u{e000}'])
        .find(|c| !alphabet.contains(c))
    {
        alphabet.insert(other);
    }
    let signature = |state: &[Vec<usize>]| -> Vec<bool> {
        let mut sig = vec![false; groups.len()];
        for ((g, p), set) in patterns.iter().zip(state) {
            if p.accepts(set) {
                if let Some(slot) = sig.get_mut(*g) {
                    *slot = true;
                }
            }
        }
        sig
    };
    let start: Vec<Vec<usize>> = patterns.iter().map(|(_, p)| p.closure(vec![0])).collect();
    let mut seen: HashSet<Vec<Vec<usize>>> = HashSet::from([start.clone()]);
    let mut queue = VecDeque::from([(start, String::new())]);
    let mut signatures: BTreeSet<Vec<bool>> = BTreeSet::new();
    let mut out = Vec::new();
    while let Some((state, word)) = queue.pop_front() {
        for &c in &alphabet {
            let next: Vec<Vec<usize>> = patterns
                .iter()
                .zip(&state)
                .map(|((_, p), set)| p.step(set, c))
                .collect();
            let mut id = word.clone();
            id.push(c);
            if signatures.insert(signature(&next)) {
                out.push(id.clone());
            }
            // Past every pattern's end, no longer id matches anything new.
            if next.iter().all(Vec::is_empty) || seen.contains(&next) {
                continue;
            }
            if seen.len() >= MAX_STATES {
                return Err(seen.len());
            }
            seen.insert(next.clone());
            queue.push_back((next, id));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::glob;

    fn matches(groups: &[Vec<&str>], id: &str) -> Vec<bool> {
        groups
            .iter()
            .map(|g| g.iter().any(|p| glob(p, id)))
            .collect()
    }

    #[test]
    fn every_way_globs_can_match_together_is_found() {
        let texts = vec![vec!["a*"], vec!["*b"], vec!["a?c", "svc-*"]];
        let groups: Vec<Vec<Pattern>> = texts
            .iter()
            .map(|g| g.iter().map(|p| Pattern::glob(p)).collect())
            .collect();
        let ids = witnesses(&groups).unwrap();
        let found: BTreeSet<Vec<bool>> = ids.iter().map(|id| matches(&texts, id)).collect();
        // "ab" both of the first two, "a" the first, "b" the second,
        // "abc" the first and the third, "svc-b" the last two...
        for want in [
            vec![true, true, false],
            vec![true, false, false],
            vec![false, true, false],
            vec![true, false, true],
            vec![false, false, false],
            vec![false, true, true],
            vec![false, false, true],
        ] {
            assert!(found.contains(&want), "{want:?} not in {ids:?}");
        }
        // One id for each way, no two the same.
        assert_eq!(found.len(), ids.len());
    }

    #[test]
    fn a_listed_id_is_only_itself() {
        let groups = vec![vec![Pattern::literal("a*")], vec![Pattern::glob("a*")]];
        let ids = witnesses(&groups).unwrap();
        let literal_too: Vec<&String> = ids.iter().filter(|id| *id == "a*").collect();
        assert_eq!(literal_too.len(), 1, "{ids:?}");
        assert!(ids.iter().any(|id| id != "a*" && glob("a*", id)), "{ids:?}");
    }
}
