//! Where uploaded data files live, who sees them, and the URLs containers
//! fetch them from.
//!
//! Without a login (`[auth] mode = "none"`, the demo) everyone shares the
//! uploads directory, as the original did: `<uploads>/<file>`, served at
//! `/_berth/data/<file>`. With a login mode each user has a directory of
//! their own, `<uploads>/u-<32 hex digits>/`, named by an HMAC of the user
//! name under a key kept beside the uploads (`<uploads>/.dir-key`), never
//! by the name itself; its files are served at `/_berth/data/u-…/<file>`.
//!
//! The directory name is the only way to a user's uploads, and it cannot
//! be worked out from the user name without the key: a container can read
//! an upload only if its input document names it, and the web app puts
//! only the launching user's own directory in the documents it makes (it
//! refuses a data URL into another user's directory). Admins are users
//! here: their own uploads only.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Name of the key file under the uploads directory (hidden, so never
/// listed or served).
const KEY_FILE: &str = ".dir-key";
/// Prefix of a per-user directory's name.
const DIR_PREFIX: &str = "u-";
/// Hex digits after the prefix (128 bits).
const DIR_HEX: usize = 32;

/// A valid data-file name: letters, digits, `-`, `_`, `.`; not hidden.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whether `name` is the form of a per-user uploads directory (`u-` and
/// 32 lowercase hex digits).
pub fn valid_user_dir(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX).is_some_and(|hex| {
        hex.len() == DIR_HEX && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// One caller's uploads: where they are written and the URL path prefix
/// (under the data base URL) containers fetch them at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadDir {
    /// The directory.
    pub path: PathBuf,
    /// `Some("u-…")` for a user's own directory, `None` for the shared one.
    pub dir: Option<String>,
}

impl UploadDir {
    /// The shared directory of mode `none`.
    pub fn shared(root: &Path) -> Self {
        UploadDir { path: root.to_owned(), dir: None }
    }

    /// `user`'s own directory under `root` (the key is read, or made on
    /// first use).
    ///
    /// # Errors
    ///
    /// The key cannot be read or written.
    pub fn of_user(root: &Path, user: &str) -> std::io::Result<Self> {
        let dir = user_dir_name(&dir_key(root)?, user);
        Ok(UploadDir { path: root.join(&dir), dir: Some(dir) })
    }

    /// The URL containers fetch `file` from, under `data_base`.
    pub fn url(&self, data_base: &str, file: &str) -> String {
        match &self.dir {
            Some(dir) => format!("{data_base}/{dir}/{file}"),
            None => format!("{data_base}/{file}"),
        }
    }
}

/// The per-user directory name of `user` under `key`.
fn user_dir_name(key: &[u8; 32], user: &str) -> String {
    use hmac::Mac;
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        // Unreachable: HMAC takes keys of any length.
        return format!("{DIR_PREFIX}{}", "0".repeat(DIR_HEX));
    };
    mac.update(b"berth uploads\0");
    mac.update(user.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().take(DIR_HEX / 2).map(|b| format!("{b:02x}")).collect();
    format!("{DIR_PREFIX}{hex}")
}

/// The key naming per-user directories under `root`: read from
/// `root/.dir-key`, or made (random, mode 0600) and linked into place
/// atomically, so concurrent first uses agree on one key.
fn dir_key(root: &Path) -> std::io::Result<[u8; 32]> {
    let path = root.join(KEY_FILE);
    match read_key(&path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(root)?;
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = root.join(format!("{KEY_FILE}.{:016x}.tmp", rand::random::<u64>()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(hex.as_bytes())?;
        file.sync_all()?;
    }
    // A hard link fails when the key exists: then someone else's is the key.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path),
        Err(e) => Err(e),
    }
}

fn read_key(path: &Path) -> std::io::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)?;
    let text = text.trim();
    let bad =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not 64 hex digits", path.display()));
    if text.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// A data file on disk.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: Option<SystemTime>,
}

/// The data files (regular files with valid names) in `dir`, by name; an
/// absent directory has none.
pub(crate) fn list(dir: &Path) -> Vec<DataFile> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<DataFile> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let meta = e.metadata().ok()?;
            (meta.is_file() && valid_file_name(&name)).then(|| DataFile {
                name,
                size: meta.len(),
                modified: meta.modified().ok(),
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_get_unguessable_directories_of_their_own() {
        let root = std::env::temp_dir().join(format!("berth-uploads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let alice = UploadDir::of_user(&root, "alice").unwrap();
        let again = UploadDir::of_user(&root, "alice").unwrap();
        let bob = UploadDir::of_user(&root, "bob").unwrap();
        assert_eq!(alice, again, "the key is kept");
        assert_ne!(alice.dir, bob.dir);
        let dir = alice.dir.clone().unwrap();
        assert!(valid_user_dir(&dir) && !dir.contains("alice"), "{dir}");
        // Not a plain hash of the name: another key gives another directory.
        let other = root.join("other");
        assert_ne!(UploadDir::of_user(&other, "alice").unwrap().dir, alice.dir);
        assert_eq!(alice.url("http://gw/_berth/data", "a.csv"), format!("http://gw/_berth/data/{dir}/a.csv"));
        assert_eq!(UploadDir::shared(&root).url("http://gw/_berth/data", "a.csv"), "http://gw/_berth/data/a.csv");
        // The key file is private, hidden from listings, and never a file name.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(list(&root).is_empty() && !valid_file_name(KEY_FILE));
        for bad in ["u-", "u-ABCDEF00000000000000000000000000", "u-0123", "..", "x-00000000000000000000000000000000"] {
            assert!(!valid_user_dir(bad), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
