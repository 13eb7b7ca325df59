//! The README and `docs/` are real: every session they show is run against
//! the real binaries, and must print exactly what the document shows. See
//! `purposegate_tests::docs` for how a document marks what is run.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use purposegate_tests::docs::{self, Block};
use purposegate_tests::postgres::PostgresCluster;
use purposegate_tests::{DemoService, ServerProcess, SidecarProcess, TempDir, binary, repo_root};

/// Processes a session runs against, and the addresses to put in place
/// of the documented ones.
struct Running {
    _server: ServerProcess,
    _app: Option<(DemoService, SidecarProcess)>,
    addresses: Vec<(String, String)>,
}

/// What a document's sessions run against, started when first needed.
struct Stage {
    /// Where `console cli` commands run and `file=` blocks are written.
    dir: TempDir,
    server: Option<Running>,
    sidecar: Option<Running>,
    logged: Option<Running>,
    chain: Option<Chain>,
    choices: Option<Running>,
    replicas: Option<Replicas>,
}

/// Two servers sharing their choices in a throwaway PostgreSQL cluster
/// (docs/choices.md, "Replicas on PostgreSQL").
struct Replicas {
    _first: ServerProcess,
    _second: ServerProcess,
    _cluster: PostgresCluster,
    addresses: Vec<(String, String)>,
}

/// The two-hop walkthrough: a server signing purpose contexts, two demo
/// apps each behind a sidecar, the first relaying to the second.
struct Chain {
    _running: Running,
    _second: (DemoService, SidecarProcess),
}

impl Stage {
    fn new(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        // The repository's examples and policies, as a reader in its root
        // sees them.
        for shared in ["engine", "examples", "proto", "server"] {
            std::os::unix::fs::symlink(repo_root().join(shared), dir.path().join(shared)).unwrap();
        }
        Stage {
            dir,
            server: None,
            sidecar: None,
            logged: None,
            chain: None,
            choices: None,
            replicas: None,
        }
    }

    /// The working directory and the addresses to put in place of the
    /// documented ones, for a session of `kind`.
    fn for_kind(&mut self, kind: &str, place: &str) -> (std::path::PathBuf, Vec<(String, String)>) {
        match kind {
            "cli" => (self.dir.path().to_path_buf(), Vec::new()),
            "server" => {
                let running = self.server.get_or_insert_with(|| {
                    let server = ServerProcess::start(&["--decision-log", "off"]);
                    let addresses = vec![
                        ("localhost:50051".into(), server.addr.to_string()),
                        ("localhost:9090".into(), server.metrics_addr.to_string()),
                        (
                            "localhost:9091".into(),
                            server.admin_addr.unwrap().to_string(),
                        ),
                        (
                            "localhost:8181".into(),
                            server.authzen_addr.unwrap().to_string(),
                        ),
                    ];
                    Running {
                        _server: server,
                        _app: None,
                        addresses,
                    }
                });
                (repo_root(), running.addresses.clone())
            }
            "sidecar" => {
                let running = self.sidecar.get_or_insert_with(|| {
                    let server = ServerProcess::start(&["--decision-log", "off"]);
                    let demo = DemoService::start();
                    let upstream = format!("http://{}", demo.grpc_addr);
                    let sidecar = SidecarProcess::start(
                        &server.url(),
                        &[
                            "--upstream",
                            &upstream,
                            "--routes",
                            "examples/customer-service/routes.yaml",
                        ],
                        &[],
                    );
                    let addresses = vec![
                        ("localhost:15001".into(), sidecar.proxy_addr.to_string()),
                        ("localhost:15002".into(), sidecar.local_addr.to_string()),
                        ("localhost:15090".into(), sidecar.metrics_addr.to_string()),
                        ("localhost:50051".into(), server.addr.to_string()),
                        ("localhost:8080".into(), demo.grpc_addr.to_string()),
                    ];
                    Running {
                        _server: server,
                        _app: Some((demo, sidecar)),
                        addresses,
                    }
                });
                (repo_root(), running.addresses.clone())
            }
            "choices" => {
                // The default policy, with any caller a writer of choices
                // (docs/choices.md starts it so).
                let running = self.choices.get_or_insert_with(|| {
                    let server =
                        ServerProcess::start(&["--decision-log", "off", "--choices-writers", "*"]);
                    let addresses = vec![("localhost:50051".into(), server.addr.to_string())];
                    Running {
                        _server: server,
                        _app: None,
                        addresses,
                    }
                });
                (repo_root(), running.addresses.clone())
            }
            "replicas" => {
                let replicas = self.replicas.get_or_insert_with(|| {
                    let cluster = PostgresCluster::start();
                    let url = cluster.database("purposegate");
                    let args = [
                        "--decision-log",
                        "off",
                        "--choices-writers",
                        "*",
                        "--choices-db",
                        &url,
                    ];
                    let first = ServerProcess::start(&args);
                    let second = ServerProcess::start(&args);
                    let addresses = vec![
                        ("localhost:50051".into(), first.addr.to_string()),
                        ("localhost:50052".into(), second.addr.to_string()),
                        (
                            "postgres://purposegate@localhost:5432/purposegate".into(),
                            url,
                        ),
                    ];
                    Replicas {
                        _first: first,
                        _second: second,
                        _cluster: cluster,
                        addresses,
                    }
                });
                (repo_root(), replicas.addresses.clone())
            }
            "logged" => {
                let dir = self.dir.path().to_path_buf();
                let running = self.logged.get_or_insert_with(|| {
                    let policy = dir.join("policy.yaml").display().to_string();
                    let log = dir.join("decisions.log").display().to_string();
                    let server = ServerProcess::start(&[
                        "--policy",
                        &policy,
                        "--decision-log",
                        &log,
                        "--authzen-listen",
                        "off",
                    ]);
                    let addresses = vec![("localhost:50051".into(), server.addr.to_string())];
                    Running {
                        _server: server,
                        _app: None,
                        addresses,
                    }
                });
                (dir, running.addresses.clone())
            }
            "chain" => {
                let dir = self.dir.path().to_path_buf();
                let chain = self.chain.get_or_insert_with(|| {
                    let key = dir.join("purpose-key.pem").display().to_string();
                    purposegate_tests::ed25519_key(&key);
                    let server = ServerProcess::start(&[
                        "--purpose-signing-key",
                        &key,
                        "--purpose-context-issuers",
                        "*",
                        "--decision-log",
                        "off",
                    ]);
                    let routes = "examples/customer-service/routes.yaml";
                    let second = DemoService::start();
                    let second_sidecar = SidecarProcess::start(
                        &server.url(),
                        &[
                            "--upstream",
                            &format!("http://{}", second.grpc_addr),
                            "--routes",
                            routes,
                        ],
                        &[],
                    );
                    let first = DemoService::start_with(&[
                        "--downstream",
                        &second_sidecar.proxy_addr.to_string(),
                    ]);
                    let first_sidecar = SidecarProcess::start(
                        &server.url(),
                        &[
                            "--upstream",
                            &format!("http://{}", first.grpc_addr),
                            "--routes",
                            routes,
                        ],
                        &[],
                    );
                    let addresses = vec![
                        (
                            "localhost:15001".into(),
                            first_sidecar.proxy_addr.to_string(),
                        ),
                        (
                            "localhost:16001".into(),
                            second_sidecar.proxy_addr.to_string(),
                        ),
                        ("localhost:50051".into(), server.addr.to_string()),
                    ];
                    Chain {
                        _running: Running {
                            _server: server,
                            _app: Some((first, first_sidecar)),
                            addresses,
                        },
                        _second: (second, second_sidecar),
                    }
                });
                (repo_root(), chain._running.addresses.clone())
            }
            other => panic!(
                "{place}: `console {other}` is not a session a test can run; \
                 say `console cli`, `console server`, `console sidecar`, `console logged`, `console chain`, `console choices` or `console replicas`"
            ),
        }
    }
}

/// Runs `command` with `sh` in `dir`, the workspace binaries first on
/// PATH, and returns what it printed on stdout and stderr together.
fn run(command: &str, dir: &Path, place: &str) -> String {
    let bin = binary("purposegate-server");
    let bin_dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{{ {command}\n}} 2>&1"))
        .current_dir(dir)
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, _) in std::env::vars() {
        if key.starts_with("PURPOSEGATE_") || key.starts_with("OTEL_") {
            sh.env_remove(key);
        }
    }
    let mut child = sh.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{place}: `{command}` did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Replays every session of the document at `relative` (to the repository
/// root), in order, writing its files as it goes.
fn replay(relative: &str) {
    let blocks = docs::blocks(&repo_root().join(relative), relative);
    let mut stage = Stage::new(&relative.replace(['/', '.'], "-"));
    let mut sessions = 0;
    // `PURPOSEGATE_BLESS_DOCS=1` writes what the binaries print into the
    // document instead of failing (review the diff before committing it).
    let bless = std::env::var_os("PURPOSEGATE_BLESS_DOCS").is_some();
    let mut updates = Vec::new();
    for block in &blocks {
        if let Some(name) = block.file_name() {
            stage.dir.write(name, &block.text);
            continue;
        }
        let Some(kind) = block.console() else {
            assert!(
                !block.text.lines().any(|l| l.starts_with("$ ")),
                "{}: a session shown outside a `console` block is never run",
                block.place
            );
            continue;
        };
        let (dir, addresses) = stage.for_kind(kind, &block.place);
        let mut printed = block.commands();
        for shown in &mut printed {
            let command = addresses
                .iter()
                .fold(shown.command.clone(), |c, (doc, real)| c.replace(doc, real));
            if kind == "logged" {
                // The decision log is written off the request path: give
                // the writer thread the moment it takes.
                std::thread::sleep(Duration::from_millis(300));
            }
            let got = run(&command, &dir, &block.place);
            let got: String = addresses
                .iter()
                .fold(got, |g, (doc, real)| g.replace(real, doc));
            sessions += 1;
            let placeholder = shown.output.trim() == "...";
            if bless && (placeholder || !docs::matches(&shown.output, &got)) {
                shown.output = got;
                continue;
            }
            assert!(
                !placeholder,
                "{}: `{}` shows nothing of its output",
                block.place, shown.command
            );
            assert!(
                docs::matches(&shown.output, &got),
                "{}: `{}` prints something else than the document shows.\n\
                 --- shown ---\n{}\n--- printed ---\n{}",
                block.place,
                shown.command,
                shown.output.trim_end(),
                got.trim_end()
            );
        }
        if bless {
            updates.push((block.lines.clone(), docs::session_text(&printed)));
        }
    }
    if bless {
        let path = repo_root().join(relative);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        for (range, session) in updates.into_iter().rev() {
            lines.splice(range, session.lines().map(String::from));
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    assert!(
        sessions > 0 || !has_session_kind(&blocks),
        "{relative}: nothing was replayed"
    );
}

fn has_session_kind(blocks: &[Block]) -> bool {
    blocks.iter().any(|b| b.console().is_some())
}

macro_rules! replayed {
    ($($test:ident => $path:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                replay($path);
            }
        )*
        /// Every document a test replays.
        const DOCUMENTS: &[&str] = &[$($path),*];
    };
}

replayed! {
    readme => "README.md",
    docs_policy => "docs/policy.md",
    docs_semantics => "docs/semantics.md",
    docs_default_policy => "docs/default-policy.md",
    docs_server => "docs/server.md",
    docs_sidecar => "docs/sidecar.md",
    docs_explorer => "docs/explorer.md",
    docs_kubernetes => "docs/kubernetes.md",
    docs_reference => "docs/reference.md",
    docs_choices => "docs/choices.md",
}

#[test]
fn every_document_in_docs_is_replayed() {
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    found.sort();
    for doc in &found {
        assert!(
            DOCUMENTS.contains(&doc.as_str()),
            "{doc} is not replayed by a test: add it to `replayed!`"
        );
    }
}

/// The README, `docs/` and the other top-level documents link only to
/// what the repository holds.
#[test]
fn documents_point_only_inside_the_repository() {
    let root = repo_root();
    let mut documents: Vec<String> = ["README.md", "ARCHITECTURE.md", "RELIABILITY.md"]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
    documents.extend(DOCUMENTS.iter().map(|s| (*s).to_string()));
    documents.dedup();
    for doc in &documents {
        let path = root.join(doc);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("../shared") && !text.contains("DESIGN.md"),
            "{doc} points outside the repository"
        );
        let base = path.parent().unwrap();
        for (i, line) in text.lines().enumerate() {
            for link in line.split("](").skip(1) {
                let Some(target) = link.split(')').next() else {
                    continue;
                };
                let target = target.split('#').next().unwrap_or("");
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                assert!(
                    base.join(target).exists(),
                    "{doc}:{}: the link `{target}` leads nowhere",
                    i + 1
                );
            }
        }
    }
}

/// The default of `flag`, as `binary --help` prints it.
fn help_default(binary: &str, flag: &str) -> String {
    let out = Command::new(purposegate_tests::binary(binary))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = help
        .find(&format!("  {flag} <"))
        .unwrap_or_else(|| panic!("{binary} --help has no {flag}:\n{help}"));
    let entry = help[start + 2..]
        .split("\n  -")
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    entry
        .split("[default: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("{binary} {flag} shows no default: {entry}"))
        .to_string()
}

/// The port at the end of an address or URL.
fn port(address: &str) -> &str {
    address.rsplit(':').next().unwrap()
}

/// The README's walkthrough starts the three binaries with no addresses:
/// each one's defaults must point at the others'.
#[test]
fn the_walkthrough_binaries_meet_on_their_defaults() {
    let server = help_default("purposegate-server", "--listen");
    let pdp = help_default("purposegate-sidecar", "--pdp");
    assert_eq!(port(&server), port(&pdp), "{server} vs {pdp}");
    let app = help_default("purposegate-demo-service", "--listen");
    let upstream = help_default("purposegate-sidecar", "--upstream");
    assert_eq!(port(&app), port(&upstream), "{app} vs {upstream}");
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for shown in [
        &server,
        &app,
        &help_default("purposegate-sidecar", "--listen"),
    ] {
        assert!(
            readme.contains(&format!(":{}", port(shown))),
            "the README does not say the walkthrough uses port {}",
            port(shown)
        );
    }
}

/// Nothing in the repository (code comments included) sends a reader to
/// a document the repository does not hold.
#[test]
fn nothing_points_outside_the_repository() {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | "node_modules" | ".git" | "corpus" | "artifacts"
                ) {
                    walk(&path, found);
                }
                continue;
            }
            let text_file = [
                ".rs", ".md", ".yaml", ".yml", ".toml", ".sh", ".py", ".mjs", ".proto", ".tpl",
                ".txt",
            ]
            .iter()
            .any(|ext| name.ends_with(ext))
                || name == "Dockerfile";
            // This file names what it looks for.
            if !text_file || path.ends_with("tests/tests/docs.rs") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                if line.contains("../shared") || line.contains("DESIGN") {
                    found.push(format!("{}:{}: {line}", path.display(), i + 1));
                }
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo_root(), &mut found);
    assert!(found.is_empty(), "{}", found.join("\n"));
}
