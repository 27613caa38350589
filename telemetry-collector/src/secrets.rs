//! The two secrets a deployment owns: the pseudonymization key that turns
//! install ids into keyed hashes, and the admin token.
//!
//! Both live in 0600 files outside the database. The key stays outside so
//! that a copied database cannot be joined with the ids on users' machines;
//! the admin token is reduced to its SHA-256 as soon as it is read, and only
//! that digest is kept in memory and compared, in constant time.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use telemetry_protocol::Uuid;

/// A secret file that could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file exists but does not hold what it should.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: &'static str,
    },
    /// The operating system's random source failed.
    #[error("no random source: {0}")]
    Random(String),
}

/// A pseudonymized install id: the first 16 bytes of
/// HMAC-SHA-256(key, project || 0 || install id).
///
/// 128 bits keep collisions out of reach for any realistic number of installs
/// while halving the size of every stored id. The project is part of the
/// message so that one install id seen by two projects yields two unrelated
/// hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallHash(pub [u8; 16]);

/// Hashes install ids under the per-deployment key.
#[derive(Clone)]
pub struct InstallHasher {
    /// HMAC keyed once with the 32 random key bytes, since every ingest
    /// request hashes an id.
    mac: Hmac,
}

impl std::fmt::Debug for InstallHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallHasher(<key hidden>)")
    }
}

impl InstallHasher {
    /// A hasher with this key.
    pub fn new(key: [u8; 32]) -> InstallHasher {
        InstallHasher {
            mac: Hmac::new(&key),
        }
    }

    /// Reads the key at `path`, creating it with a fresh random key on first start.
    pub fn load_or_create(path: &Path) -> Result<InstallHasher, SecretError> {
        let text = read_or_create(path, || random_hex(32))?;
        let key = decode_hex::<32>(text.trim()).ok_or_else(|| SecretError::Invalid {
            path: path.to_owned(),
            message: "expected 64 hexadecimal characters",
        })?;
        Ok(InstallHasher::new(key))
    }

    /// The pseudonym of `install_id` within `project`.
    pub fn hash(&self, project: &str, install_id: &Uuid) -> InstallHash {
        let mut message = Vec::with_capacity(project.len() + 17);
        message.extend_from_slice(project.as_bytes());
        message.push(0);
        message.extend_from_slice(install_id.as_bytes());
        let mac = self.mac.mac(&message);
        let mut out = [0; 16];
        out.copy_from_slice(&mac[..16]);
        InstallHash(out)
    }
}

/// HMAC-SHA-256 (RFC 2104) for a key of at most one block, which ours always
/// is. The hash states after the padded key are computed once, so each
/// message costs two compressions fewer than keying afresh.
#[derive(Clone)]
struct Hmac {
    /// SHA-256 after absorbing key ^ ipad.
    inner: Sha256,
    /// SHA-256 after absorbing key ^ opad.
    outer: Sha256,
}

impl Hmac {
    fn new(key: &[u8; 32]) -> Hmac {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        let pad = |byte: u8| block.map(|b| b ^ byte);
        Hmac {
            inner: Sha256::new().chain_update(pad(0x36)),
            outer: Sha256::new().chain_update(pad(0x5c)),
        }
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(message).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }
}

/// The admin token, reduced to its SHA-256.
#[derive(Clone)]
pub struct AdminToken {
    /// SHA-256 of the token; the token itself is dropped after hashing.
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

/// Where the admin token came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Given inline in the config file.
    Config,
    /// Read from this file.
    File(PathBuf),
    /// Generated into this file on this start.
    Generated(PathBuf),
}

impl AdminToken {
    /// The fewest characters an admin token may have, surrounding spaces not counted.
    pub const MIN_CHARS: usize = 16;

    /// Whether `token` is long enough to be the admin token: at least
    /// [`AdminToken::MIN_CHARS`] characters once trimmed, so a blank or short
    /// token can never sign anyone in.
    pub fn is_strong(token: &str) -> bool {
        token.trim().chars().count() >= AdminToken::MIN_CHARS
    }

    /// The digest of `token`; check it with [`AdminToken::is_strong`] first.
    pub fn from_token(token: &str) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(token.trim().as_bytes()).into(),
        }
    }

    /// Reads the token at `path`, generating a random one there if missing.
    pub fn load_or_create(path: &Path) -> Result<(AdminToken, TokenSource), SecretError> {
        let existed = path.exists();
        let text = read_or_create(path, || random_hex(32))?;
        if !AdminToken::is_strong(&text) {
            return Err(SecretError::Invalid {
                path: path.to_owned(),
                message: "the admin token must be at least 16 characters",
            });
        }
        let source = if existed {
            TokenSource::File(path.to_owned())
        } else {
            TokenSource::Generated(path.to_owned())
        };
        Ok((AdminToken::from_token(&text), source))
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> Result<String, SecretError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(encode_hex(&bytes))
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads `path`, or creates it atomically with `make()` and mode 0600.
///
/// Creation writes a temporary file, fsyncs it, then hard-links it into place.
/// Unlike a rename, the link fails if the file appeared meanwhile, so two
/// collectors starting at once agree on one secret instead of each keeping its own.
fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, SecretError>,
) -> Result<String, SecretError> {
    let io_err = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => return Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let content = make()?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        random_hex(8)?
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            sync_parent(path);
            Ok(content)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::read_to_string(path).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Makes a new directory entry durable; best effort, as not every platform allows it.
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent()
        && let Ok(dir) = fs::File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
    {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_vector_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; pad it to our 32-byte key
        // form with zeros, which HMAC does itself for short keys.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = Hmac::new(&key).mac(b"what do ya want for nothing?");
        assert_eq!(
            encode_hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hashes_depend_on_key_project_and_id() {
        let id = Uuid::from_u128(42);
        let a = InstallHasher::new([1; 32]);
        let b = InstallHasher::new([2; 32]);
        assert_eq!(a.hash("p", &id), a.hash("p", &id));
        assert_ne!(a.hash("p", &id), b.hash("p", &id));
        assert_ne!(a.hash("p", &id), a.hash("q", &id));
        assert_ne!(a.hash("p", &id), a.hash("p", &Uuid::from_u128(43)));
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = InstallHasher::load_or_create(&path).unwrap();
        let second = InstallHasher::load_or_create(&path).unwrap();
        let id = Uuid::from_u128(7);
        assert_eq!(first.hash("p", &id), second.hash("p", &id));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, "not hex").unwrap();
        assert!(InstallHasher::load_or_create(&path).is_err());
    }

    #[test]
    fn admin_token_is_generated_then_verified_in_constant_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let (token, source) = AdminToken::load_or_create(&path).unwrap();
        assert_eq!(source, TokenSource::Generated(path.clone()));
        let text = fs::read_to_string(&path).unwrap();
        assert!(token.verify(text.trim()));
        assert!(!token.verify("wrong"));
        assert!(!token.verify(""));
        let (_, again) = AdminToken::load_or_create(&path).unwrap();
        assert_eq!(again, TokenSource::File(path));
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode_hex(&bytes), "0001abff");
        assert_eq!(decode_hex::<4>("0001abff"), Some(bytes));
        assert_eq!(decode_hex::<4>("0001abfg"), None);
    }
}
