//! The layout's invariants (ARCHITECTURE.md) that the compiler does not
//! check by itself, read from Cargo's own view of the workspace
//! (`cargo metadata`), not by searching source text.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::collections::{BTreeSet, HashMap};

use purposegate_tests::repo_root;
use serde_json::Value;

/// The workspace's resolved dependency graph.
struct Graph {
    /// Package id → (name, ids of its normal dependencies).
    nodes: HashMap<String, (String, Vec<String>)>,
    /// Workspace package name → id.
    members: HashMap<String, String>,
}

impl Graph {
    fn load() -> Graph {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(repo_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: HashMap<String, String> = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["name"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let members = meta["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| {
                let id = id.as_str().unwrap().to_string();
                (names[&id].clone(), id)
            })
            .collect();
        let nodes = meta["resolve"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let id = n["id"].as_str().unwrap().to_string();
                // Only what the package needs to build and run: no dev or
                // build dependencies.
                let normal = n["deps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| {
                        d["dep_kinds"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|k| k["kind"].is_null())
                    })
                    .map(|d| d["pkg"].as_str().unwrap().to_string())
                    .collect();
                (id.clone(), (names[&id].clone(), normal))
            })
            .collect();
        Graph { nodes, members }
    }

    /// The names of every crate `member` links, itself excluded.
    fn linked(&self, member: &str) -> BTreeSet<String> {
        let start = self
            .members
            .get(member)
            .unwrap_or_else(|| panic!("{member} is not a workspace member"));
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.clone()];
        let mut names = BTreeSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            let (name, deps) = &self.nodes[&id];
            if id != *start {
                names.insert(name.clone());
            }
            todo.extend(deps.iter().cloned());
        }
        names
    }
}

fn assert_links_none(graph: &Graph, member: &str, forbidden: &[&str], why: &str) {
    let linked = graph.linked(member);
    let found: Vec<&&str> = forbidden.iter().filter(|f| linked.contains(**f)).collect();
    assert!(found.is_empty(), "{member} links {found:?}: {why}");
}

#[test]
fn the_engine_links_nothing_async_or_networked() {
    let graph = Graph::load();
    // The graph is walked: the server does link the network stack.
    assert!(graph.linked("purposegate-server").contains("tokio"));
    assert_links_none(
        &graph,
        "purposegate-engine",
        &[
            "tokio",
            "tonic",
            "prost",
            "hyper",
            "h2",
            "mio",
            "futures-util",
            "purposegate-proto",
            "purposegate-server",
        ],
        "the engine takes text and returns values",
    );
}

#[test]
fn the_sidecar_links_neither_the_server_nor_kubernetes() {
    let graph = Graph::load();
    // The graph is walked: the server does link the webhook's crates.
    assert!(graph.linked("purposegate-server").contains("kube-core"));
    assert_links_none(
        &graph,
        "purposegate-sidecar",
        &[
            "purposegate-server",
            "kube-core",
            "k8s-openapi",
            "json-patch",
        ],
        "the sidecar is built from the engine, the API and the runtime",
    );
}

#[test]
fn the_runtime_knows_neither_the_engine_nor_the_api() {
    let graph = Graph::load();
    assert!(graph.linked("purposegate-runtime").contains("tokio"));
    assert_links_none(
        &graph,
        "purposegate-runtime",
        &[
            "purposegate-engine",
            "purposegate-proto",
            "purposegate-server",
            "purposegate-sidecar",
        ],
        "the runtime serves ports; what a decision is, its callers know",
    );
}

/// The top-level modules of `crate_dir`'s `src/` and, for each, the
/// top-level modules its code names (`crate::m`, or `super::m` from a
/// file whose `super` is the crate root). Test modules are left out.
fn module_uses(crate_dir: &str) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let src = repo_root().join(crate_dir).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut uses = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap().with_extension("");
        let mut path: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.last().is_some_and(|p| p == "tests") {
            continue;
        }
        if path.last().is_some_and(|p| p == "mod") {
            path.pop();
        }
        if path.len() == 1 && (path[0] == "lib" || path[0] == "main") {
            path.clear();
        }
        let Some(top) = path.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
        let named = uses.entry(top.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            named.insert(ident_at(&text[at + "crate::".len()..]));
        }
        for (at, _) in text.match_indices("super::") {
            // Only the first `super::` of a chain.
            if text[..at].ends_with("super::") {
                continue;
            }
            let mut rest = &text[at..];
            let mut up = 0;
            while let Some(r) = rest.strip_prefix("super::") {
                rest = r;
                up += 1;
            }
            if up == path.len() {
                named.insert(ident_at(rest));
            }
        }
    }
    let tops: BTreeSet<String> = uses.keys().cloned().collect();
    for (top, named) in &mut uses {
        named.retain(|n| n != top && tops.contains(n));
    }
    uses
}

fn ident_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_two_modules_of_a_crate_import_each_other_even_through_others() {
    // The reading finds what is there: the server's start-up names its
    // gRPC edge, the engine's loader its YAML reader (through `super::`).
    assert!(module_uses("server")["serve"].contains("grpc"));
    assert!(module_uses("engine")["load"].contains("yaml"));
    for crate_dir in ["engine", "proto", "runtime", "server", "sidecar"] {
        let uses = module_uses(crate_dir);
        assert!(uses.len() >= 2, "{crate_dir}: {uses:?}");
        // Depth-first, with the path so far: a module met again on its own
        // path closes a circle.
        fn walk(
            uses: &std::collections::BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            crate_dir: &str,
        ) {
            let Some(last) = path.last().cloned() else {
                return;
            };
            for next in uses.get(&last).into_iter().flatten() {
                assert!(
                    !path.contains(next),
                    "{crate_dir}: modules import each other: {} -> {next}",
                    path.join(" -> ")
                );
                path.push(next.clone());
                walk(uses, path, crate_dir);
                path.pop();
            }
        }
        for top in uses.keys() {
            walk(&uses, &mut vec![top.clone()], crate_dir);
        }
    }
}
