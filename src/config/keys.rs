//! The master keys: where they come from. The keyring's current key seals; older keys only open.
//! The current key is `ASSENT_MASTER_KEY` (or its `_FILE`), or else the key file `<database>.key`
//! generated beside a SQLite database. Older keys are `ASSENT_OLD_MASTER_KEYS` and, beside a key
//! file, `<database>.key.new` (the key of a rotation that has not finished) and
//! `<database>.key.old` (the key before the last rotation). Moving every sealed value to a new
//! key is `service/keys.rs`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Config, MasterKeySource};
use crate::domain::crypto::{Keyring, MasterKey};

/// The keyring a server (or a CLI command) works with.
pub fn keyring(config: &Config) -> anyhow::Result<Keyring> {
    let mut older = old_master_keys(config)?;
    let current = match &config.master_key {
        MasterKeySource::Given(secret) => MasterKey::from_base64(secret.expose())?,
        MasterKeySource::File(path) => {
            let files = KeyFiles::beside(path);
            older.extend(read_key_file(&files.new)?);
            older.extend(read_key_file(&files.old)?);
            load_or_create_key_file(path)?
        }
    };
    Ok(Keyring::new(current, older))
}

/// The keyring of a rotation, and the key files to swap when it finishes. With a given key: the
/// server's keyring, no files. With the key file: `<file>.new` (generated now unless an unfinished
/// rotation left it) as the current key, every other key as older.
pub fn rotation_keyring(config: &Config) -> anyhow::Result<(Keyring, Option<KeyFiles>)> {
    match &config.master_key {
        MasterKeySource::Given(_) => Ok((keyring(config)?, None)),
        MasterKeySource::File(path) => {
            let files = KeyFiles::beside(path);
            let new = files.prepare()?;
            let mut older = old_master_keys(config)?;
            older.extend(read_key_file(&files.old)?);
            older.push(load_or_create_key_file(path)?);
            Ok((Keyring::new(new, older), Some(files)))
        }
    }
}

fn old_master_keys(config: &Config) -> anyhow::Result<Vec<MasterKey>> {
    config
        .old_master_keys
        .iter()
        .map(|k| Ok(MasterKey::from_base64(k.expose())?))
        .collect()
}

/// Reads the master key file, or creates it (mode 0600) on first use. Two processes racing to
/// create it both end up with the one that was written first.
pub fn load_or_create_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    if let Some(key) = read_key_file(path)? {
        return Ok(key);
    }
    let key = MasterKey::generate();
    // Written whole under a temporary name, then linked into place: the file is never seen
    // half-written, and a link fails if another process made it first.
    let tmp = sibling(path, &format!(".tmp{}", std::process::id()));
    write_key_file(&tmp, &key)?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            sync_dir(path)?;
            tracing::info!(path = %path.display(), "generated a new master key file; back it up with the database");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| anyhow::anyhow!("master key file {} vanished", path.display())),
        Err(e) => Err(anyhow::anyhow!(
            "cannot create master key file {}: {e}",
            path.display()
        )),
    }
}

fn read_key_file(path: &Path) -> anyhow::Result<Option<MasterKey>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            MasterKey::from_base64(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot read master key file {}: {e}",
            path.display()
        )),
    }
}

/// Creates (or truncates) `path` with mode 0600 and writes the key, synced to disk.
fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write master key file {}: {e}", path.display()))?;
    file.write_all(key.to_base64().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a rename or link in the key file's directory durable.
fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The generated key file and its two companions during and after a rotation.
#[derive(Clone, Debug)]
pub struct KeyFiles {
    pub current: PathBuf,
    /// The key a rotation moves to, written before any value is sealed under it.
    pub new: PathBuf,
    /// The key before the last finished rotation, kept until the operator deletes it.
    pub old: PathBuf,
}

impl KeyFiles {
    pub fn beside(current: &Path) -> Self {
        Self {
            current: current.to_owned(),
            new: sibling(current, ".new"),
            old: sibling(current, ".old"),
        }
    }

    /// The key to rotate to: the one an unfinished rotation wrote, or a new one, on disk before
    /// anything is sealed under it (a rotation that dies then loses nothing).
    pub fn prepare(&self) -> anyhow::Result<MasterKey> {
        load_or_create_key_file(&self.new)
    }

    /// Once every value is under the new key: the current key is kept as `.old`, then the new one
    /// replaces it in one rename. Dying at any step leaves files that `keyring` still opens
    /// everything with, and running the rotation again finishes it.
    pub fn finish(&self) -> anyhow::Result<()> {
        if let Some(current) = read_key_file(&self.current)? {
            let tmp = sibling(&self.old, ".tmp");
            write_key_file(&tmp, &current)?;
            std::fs::rename(&tmp, &self.old)?;
        }
        std::fs::rename(&self.new, &self.current).map_err(|e| {
            anyhow::anyhow!(
                "cannot move {} to {}: {e}",
                self.new.display(),
                self.current.display()
            )
        })?;
        sync_dir(&self.current)
    }
}
