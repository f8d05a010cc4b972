//! Naming rules for containers and staged files, and the percent-encoding
//! of file names in URLs.

use crate::error::{Error, Result};

/// Longest container name: a DNS label.
pub const MAX_CONTAINER_NAME_LEN: usize = 63;

/// Longest file name in bytes (the common file-system limit).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Checks that `name` is a valid container name: a lowercase DNS label
/// (1 to 63 of `a-z`, `0-9`, `-`, neither starting nor ending with `-`).
///
/// ```
/// use berth_staging::validate_container_name;
/// assert!(validate_container_name("viz-1").is_ok());
/// assert!(validate_container_name("Viz").is_err());
/// assert!(validate_container_name("../x").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] saying which rule is broken.
pub fn validate_container_name(name: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidName { kind: "container", name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("name is empty");
    }
    if name.len() > MAX_CONTAINER_NAME_LEN {
        return invalid("name is longer than 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return invalid("name may contain only a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return invalid("name must not start or end with '-'");
    }
    Ok(())
}

/// Checks that `name` is a valid staged file name: 1 to 255 bytes of UTF-8
/// without `/`, `\`, NUL or other control characters, and without `..`
/// anywhere, so that it is always one plain path component on every
/// platform and in every URL.
///
/// ```
/// use berth_staging::validate_file_name;
/// assert!(validate_file_name("counts 2024.csv").is_ok());
/// assert!(validate_file_name("../etc/passwd").is_err());
/// assert!(validate_file_name("a\\b").is_err());
/// ```
///
/// # Errors
///
/// [`Error::InvalidName`] saying which rule is broken.
pub fn validate_file_name(name: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidName { kind: "file", name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("name is empty");
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return invalid("name is longer than 255 bytes");
    }
    if name == "." || name.contains("..") {
        return invalid("name must not be '.' or contain '..'");
    }
    if name.contains(['/', '\\']) {
        return invalid("name must not contain '/' or '\\'");
    }
    if name.chars().any(char::is_control) {
        return invalid("name must not contain NUL or control characters");
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a file
/// name becomes exactly one URL path segment.
pub(crate) fn encode_segment(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes `%XX` escapes of one URL path segment; `None` for a malformed
/// escape or bytes that are not UTF-8.
pub(crate) fn decode_segment(segment: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names() {
        for ok in ["a", "viz-1", "0", &"a".repeat(63)] {
            assert!(validate_container_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a/b", "..", "a\0", "é", &"a".repeat(64)] {
            assert!(validate_container_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["a", "a.csv", ".hidden", "x y.tsv", "données.json", &"a".repeat(255)] {
            assert!(validate_file_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            "../a",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{7f}",
            "a\u{85}",
            &"a".repeat(256),
            &"é".repeat(128),
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn segments_round_trip() {
        for name in ["a.csv", "a b%c", "données.json", "a+b&c=d?#", "~_-."] {
            let encoded = encode_segment(name);
            assert!(!encoded.contains(['/', ' ', '?', '#', '%']) || encoded.contains('%'));
            assert_eq!(decode_segment(&encoded).as_deref(), Some(name));
        }
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(decode_segment("%zz"), None);
        assert_eq!(decode_segment("%4"), None);
        assert_eq!(decode_segment("%ff"), None);
        assert_eq!(decode_segment("a%2fb").as_deref(), Some("a/b"));
    }
}
