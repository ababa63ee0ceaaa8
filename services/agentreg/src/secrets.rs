//! The instance's secret files: the data directory (mode 0700), the KAS shared secret and the
//! encryption key (each base64 in a mode-0600 file, generated on first start when no file is
//! configured), and the initial root token file.

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Bytes of a generated KAS secret (GitLab's `SECRET_LENGTH`).
const KAS_SECRET_BYTES: usize = 32;
/// Bytes of the AES-256 key.
const ENCRYPTION_KEY_BYTES: usize = 32;

/// Creates the data directory (and parents) readable by the service's user only, and makes an
/// existing one so (a Docker volume is often created 0755), on every start.
pub fn create_data_dir(path: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("creating data directory {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "making data directory {} private (mode 0700); give the service's user ownership of it",
            path.display()
        )
    })
}

/// Makes every file and directory the process creates private to its user (umask 077).
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Reads the KAS secret from `configured`, or from `<data-dir>/kas_secret`, generating it there
/// on first start.
pub fn kas_secret(
    configured: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<SecretBox<Vec<u8>>> {
    match configured {
        Some(path) => {
            let secret = read_base64_key(path, None)?;
            if secret.expose_secret().len() < KAS_SECRET_BYTES {
                bail!(
                    "KAS secret file {} holds {} bytes; it must hold at least {KAS_SECRET_BYTES} (GitLab generates 32 random bytes)",
                    path.display(),
                    secret.expose_secret().len()
                );
            }
            Ok(secret)
        }
        None => read_or_generate(&data_dir.join("kas_secret"), KAS_SECRET_BYTES),
    }
}

/// Reads the encryption key from `configured`, or from `<data-dir>/encryption_key`, generating
/// it there on first start.
pub fn encryption_key(
    configured: Option<&Path>,
    data_dir: &Path,
) -> anyhow::Result<SecretBox<[u8; 32]>> {
    let bytes = match configured {
        Some(path) => read_base64_key(path, Some(ENCRYPTION_KEY_BYTES))?,
        None => read_or_generate(&data_dir.join("encryption_key"), ENCRYPTION_KEY_BYTES)?,
    };
    let key: [u8; 32] = bytes
        .expose_secret()
        .as_slice()
        .try_into()
        .context("the encryption key must be 32 bytes")?;
    Ok(SecretBox::new(Box::new(key)))
}

/// Reads a token from a file (surrounding whitespace ignored); an empty file is an error.
pub fn read_token_file(path: &Path) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Writes the generated root token where only the service's user can read it.
pub fn write_root_token(path: &Path, token: &SecretString) -> anyhow::Result<()> {
    write_private(path, token.expose_secret().as_bytes())
        .with_context(|| format!("writing the initial root token to {}", path.display()))
}

fn read_or_generate(path: &Path, n_bytes: usize) -> anyhow::Result<SecretBox<Vec<u8>>> {
    if path.exists() {
        return read_base64_key(path, Some(n_bytes));
    }
    let mut bytes = vec![0u8; n_bytes];
    rand::rng().fill_bytes(&mut bytes);
    write_private(path, STANDARD.encode(&bytes).as_bytes())
        .with_context(|| format!("writing generated secret {}", path.display()))?;
    Ok(SecretBox::new(Box::new(bytes)))
}

fn read_base64_key(path: &Path, expected_len: Option<usize>) -> anyhow::Result<SecretBox<Vec<u8>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading secret file {}", path.display()))?;
    let bytes = STANDARD
        .decode(text.trim())
        .with_context(|| format!("secret file {} must hold standard base64", path.display()))?;
    if bytes.is_empty() {
        bail!("secret file {} is empty", path.display());
    }
    if let Some(expected) = expected_len
        && bytes.len() != expected
    {
        bail!(
            "secret file {} must hold {expected} bytes, not {}",
            path.display(),
            bytes.len()
        );
    }
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Creates a new file with mode 0600, durably.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let first = encryption_key(None, dir.path()).unwrap();
        let again = encryption_key(None, dir.path()).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        let mode = std::fs::metadata(dir.path().join("encryption_key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn data_dir_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_data_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn an_existing_open_data_dir_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

        create_data_dir(&data).unwrap();

        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_short_kas_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kas");
        std::fs::write(&path, STANDARD.encode([7u8; 1])).unwrap();

        let error = kas_secret(Some(&path), dir.path()).err().unwrap();

        assert!(error.to_string().contains("at least 32"), "{error}");
    }

    #[test]
    fn configured_secret_must_be_base64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kas");
        std::fs::write(&path, "not base64!").unwrap();
        assert!(kas_secret(Some(&path), dir.path()).is_err());
        std::fs::write(&path, STANDARD.encode([7u8; 32])).unwrap();
        assert_eq!(
            kas_secret(Some(&path), dir.path())
                .unwrap()
                .expose_secret()
                .len(),
            32
        );
    }
}
