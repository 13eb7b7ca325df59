//! A throwaway PKI made with openssl: a CA and certificates with SPIFFE
//! URI SANs for the server, sidecars and callers.

use super::*;

/// A certificate authority made with the real `openssl`, issuing leaf
/// certificates (EC P-256, one day) into a test's directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    name: String,
}

impl Pki {
    /// A new CA `name`: `{name}-ca.crt` and `{name}-ca.key` in `dir`.
    pub fn new(dir: &std::path::Path, name: &str) -> Self {
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &pki.path("ca.key"),
            "-out",
            &pki.path("ca.crt"),
        ]);
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir
            .join(format!("{}-{file}", self.name))
            .display()
            .to_string()
    }

    /// The CA certificate's file.
    pub fn ca(&self) -> String {
        self.path("ca.crt")
    }

    /// Issues `{leaf}.crt` and `{leaf}.key` (in this CA's file names) with
    /// the subject alternative names `san` (OpenSSL syntax, e.g.
    /// `IP:127.0.0.1,URI:spiffe://example.org/x`); written to new files
    /// first and renamed over the old ones, as a Secret update swaps them.
    /// Returns (certificate, key).
    pub fn issue(&self, leaf: &str, san: &str) -> (String, String) {
        self.issue_named(leaf, leaf, san)
    }

    /// [`Pki::issue`] with a common name of its own, to tell a renewed
    /// certificate from the one it replaces.
    pub fn issue_named(&self, leaf: &str, common_name: &str, san: &str) -> (String, String) {
        let (cert, key) = (
            self.path(&format!("{leaf}.crt")),
            self.path(&format!("{leaf}.key")),
        );
        let (new_cert, new_key, csr, ext) = (
            format!("{cert}.new"),
            format!("{key}.new"),
            format!("{cert}.csr"),
            format!("{cert}.ext"),
        );
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n"
            ),
        )
        .unwrap_or_else(|e| panic!("write {ext}: {e}"));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-keyout",
            &new_key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &self.ca(),
            "-CAkey",
            &self.path("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &new_cert,
        ]);
        std::fs::rename(&new_key, &key).unwrap_or_else(|e| panic!("rename {new_key}: {e}"));
        std::fs::rename(&new_cert, &cert).unwrap_or_else(|e| panic!("rename {new_cert}: {e}"));
        (cert, key)
    }
}

/// Runs the real `openssl` with `args`; fails the test if it fails.
pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new Ed25519 private key (PKCS#8 PEM) at `path`, made by openssl.
pub fn ed25519_key(path: &str) {
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", path]);
}
