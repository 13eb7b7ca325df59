//! A throwaway PostgreSQL cluster for tests: Debian's binaries (which
//! `.ci/test` installs), a data directory of its own under the system temp
//! dir, a free loopback port, removed on drop. `initdb` and `postgres`
//! refuse to run as root, so as root (CI) they run as the `postgres`
//! user.

use std::path::PathBuf;
use std::process::Command;

use crate::TempDir;

/// A running cluster.
#[derive(Debug)]
pub struct PostgresCluster {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Server options besides the port and socket (TLS files).
    options: String,
}

/// The newest installed PostgreSQL's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not installed (/usr/lib/postgresql: {e}); .ci/test installs it")
        })
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no PostgreSQL binaries under /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PostgresCluster {
    /// Initialises and starts a cluster (trust authentication on loopback
    /// for the user `purposegate`, its socket in its own directory).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same, serving TLS with `certificate` and `key` (PEM files) too.
    pub fn start_with_tls(certificate: &str, key: &str) -> Self {
        Self::start_with(Some((certificate, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let dir = TempDir::new("postgres");
        let mut options = String::new();
        if let Some((certificate, key)) = tls {
            // Where the server may read them: its own, key unreadable to
            // others.
            let (crt, pem) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::copy(certificate, &crt).unwrap_or_else(|e| panic!("copy {certificate}: {e}"));
            std::fs::copy(key, &pem).unwrap_or_else(|e| panic!("copy {key}: {e}"));
            std::fs::set_permissions(&pem, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod: {e}"));
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                pem.display()
            );
        }
        let bin = bin_dir();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap_or_else(|e| panic!("chown: {e}"));
            assert!(status.success(), "chown {status}");
        }
        let mut cluster = PostgresCluster {
            port: outside_ephemeral_range(0),
            dir,
            bin,
            options,
        };
        cluster.run(&format!(
            "{} -D {} -A trust -U purposegate --no-sync -E UTF8 >/dev/null",
            cluster.bin.join("initdb").display(),
            data.display()
        ));
        // A port below the kernel's ephemeral range, so the cluster never
        // takes one another test was just given by `free_addr`; another
        // cluster may hold it: then the next.
        for attempt in 1..=8 {
            if cluster.try_pg_ctl("start -w -t 30") {
                return cluster;
            }
            cluster.port = outside_ephemeral_range(attempt);
        }
        panic!("the PostgreSQL cluster did not start on any of 8 ports");
    }

    /// Runs `script` with `sh`, as the `postgres` user when this is root.
    fn run(&self, script: &str) {
        assert!(self.try_run(script), "{script}");
    }

    /// The same: whether it succeeded.
    fn try_run(&self, script: &str) -> bool {
        let status = if is_root() {
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", script])
                .status()
        } else {
            Command::new("sh").args(["-c", script]).status()
        };
        status.is_ok_and(|s| s.success())
    }

    /// `pg_ctl ACTION` on the cluster (`start -w`, `stop -m immediate`).
    pub fn pg_ctl(&self, action: &str) {
        assert!(self.try_pg_ctl(action), "pg_ctl {action}");
    }

    /// The same: whether it succeeded.
    fn try_pg_ctl(&self, action: &str) -> bool {
        let dir = self.dir.path();
        self.try_run(&format!(
            "{} -D {} -l {} -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}' {action}",
            self.bin.join("pg_ctl").display(),
            dir.join("data").display(),
            dir.join("postgres.log").display(),
            self.port,
            dir.display(),
            self.options,
        ))
    }

    /// Stops (`SIGSTOP`) or lets go on (`SIGCONT`) every process of the
    /// cluster: a database that hangs, its connections open.
    pub fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .unwrap_or_else(|e| panic!("postmaster.pid: {e}"));
        let pid = pid.lines().next().unwrap_or_default().trim().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &pid])
            .output()
            .unwrap_or_else(|e| panic!("pgrep: {e}"));
        let mut pids = vec![pid];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{signal} {pids:?}: {status}");
    }

    /// Ends every connection the servers hold (`pg_terminate_backend`).
    pub fn terminate_servers_connections(&self) {
        self.psql(
            "postgres",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'purposegate-server'",
        );
    }

    /// The URL of a new database `name` on the cluster.
    pub fn database(&self, name: &str) -> String {
        self.run(&format!(
            "{} -h 127.0.0.1 -p {} -U purposegate {name}",
            self.bin.join("createdb").display(),
            self.port
        ));
        format!("postgres://purposegate@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` on database `name` with `psql`; its output.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-U", "purposegate", "-At", "-c", sql])
            .args(["-p", &self.port.to_string(), name])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(out.status.success(), "psql {sql}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A port in 20000..30000, below Linux's ephemeral range (32768 on), picked
/// from the process, the time and `salt`.
fn outside_ephemeral_range(salt: u64) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    20_000 + u16::try_from(h.finish() % 10_000).unwrap_or(0)
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let dir = self.dir.path();
        let script = format!(
            "{} -D {} stop -m immediate >/dev/null 2>&1",
            self.bin.join("pg_ctl").display(),
            dir.join("data").display()
        );
        let _ = if is_root() {
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", &script])
                .status()
        } else {
            Command::new("sh").args(["-c", &script]).status()
        };
    }
}
