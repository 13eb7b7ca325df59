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
