//! Glob patterns for gRPC methods and subject ids.

/// `*` matches any run of characters, `?` any one; everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear-ish, no
    // recursion, so a hostile path cannot blow the stack.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).unwrap_or(&[]).iter().all(|&c| c == '*')
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
