//! Glob patterns for gRPC methods and subject ids.

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    // Ids and SPIFFE IDs are ASCII: match their bytes without copying.
    if pattern.is_ascii() && text.is_ascii() {
        return glob_slice(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_slice(&p, &t, '*', '?')
}

/// [`glob`] over any items: `star` matches any run, `any` one item.
/// Iterative matching with backtracking to the last `star`: linear-ish,
/// no recursion, so a hostile text cannot blow the stack.
pub fn glob_slice<T: PartialEq + Copy>(p: &[T], t: &[T], star: T, any: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(&c) if c == star => {
                last_star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == any || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match last_star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    last_star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or(&[]).iter().all(|&c| c == star)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match() {
        assert!(glob(
            "/demo.v1.CustomerService/*",
            "/demo.v1.CustomerService/GetCustomer"
        ));
        assert!(glob(
            "spiffe://cluster.local/ns/*/sa/crm",
            "spiffe://cluster.local/ns/crm/sa/crm"
        ));
        assert!(glob("crm-?", "crm-1"));
        assert!(!glob("crm-?", "crm-12"));
        assert!(!glob("/a/b", "/a/bc"));
        assert!(glob("*", ""));
    }
}
