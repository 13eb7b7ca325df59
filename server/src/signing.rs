//! Ed25519 keys: the server signs the decision log's checkpoints and
//! purpose contexts with a private key (PKCS#8 PEM, as `openssl genpkey
//! -algorithm ed25519` writes it); `verify-log` checks with the public key
//! (`openssl pkey -pubout`, a SubjectPublicKeyInfo PEM).
//!
//! A key is named by its id: the first 16 hex digits of the SHA-256 of its
//! 32 raw public-key bytes, so a checkpoint says which key signed it.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest, Sha256};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the
/// sequence, the algorithm identifier 1.3.101.112 and the bit string
/// header; the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A key's id: 16 hex digits of the SHA-256 of its raw public key.
pub fn key_id(public: &[u8]) -> String {
    Sha256::digest(public)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The server's signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
    id: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.id).finish()
    }
}

impl Signer {
    /// Reads an Ed25519 private key from a PKCS#8 PEM file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(_) => {
                return Err("not a PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`); \
                     make one with `openssl genpkey -algorithm ed25519`"
                    .to_string());
            }
            Err(e) => return Err(format!("no PEM private key in it ({e})")),
        };
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| format!("not an Ed25519 private key ({e})"))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Signer { pair, id })
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The 32 raw bytes of the public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// The raw 64-byte signature of `message`.
    pub fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// The signature of `message`, base64 (standard alphabet).
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.sign(message).as_ref())
    }
}

/// A public key to verify checkpoints with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    raw: Vec<u8>,
    id: String,
}

impl PublicKey {
    /// Reads an Ed25519 public key (`-----BEGIN PUBLIC KEY-----`) from a
    /// PEM file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| format!("no PEM public key (`-----BEGIN PUBLIC KEY-----`) in it ({e})"))?;
        let raw = der
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .filter(|key| key.len() == 32)
            .ok_or("not an Ed25519 public key")?
            .to_vec();
        let id = key_id(&raw);
        Ok(PublicKey { raw, id })
    }

    pub fn key_id(&self) -> &str {
        &self.id
    }

    /// The public half of a signer.
    pub fn of(signer: &Signer) -> Self {
        let raw = signer.public_key();
        PublicKey {
            id: key_id(&raw),
            raw,
        }
    }

    /// Whether `signature` (base64) signs `message` with this key.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(message, &signature)
            .is_ok()
    }
}

/// A key for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// RFC 8410 section 10.3's example private key.
    pub const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
        -----END PRIVATE KEY-----\n";

    pub fn private_pem() -> String {
        PRIVATE.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::PRIVATE;
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_public_key_only() {
        let signer = Signer::from_pem(PRIVATE.as_bytes()).unwrap();
        let spki = [&ED25519_SPKI_PREFIX[..], signer.pair.public_key().as_ref()].concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        );
        let public = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(public.key_id(), signer.key_id());
        let message = b"purposegate 7".to_vec();
        let signature = signer.sign(&message);
        assert!(public.verifies(&message, &signature));
        assert!(!public.verifies(b"purposegate 8", &signature));
        assert!(!public.verifies(&message, "not base64!"));
    }

    #[test]
    fn other_keys_are_refused_with_a_reason() {
        let e = Signer::from_pem(b"nothing").unwrap_err();
        assert!(e.contains("no PEM private key"), "{e}");
        let e =
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n")
                .unwrap_err();
        assert!(e.contains("not an Ed25519 public key"), "{e}");
    }
}
