//! Unguessable tokens that let one container read its staged objects.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::name::validate_container_name;

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// A bearer token for one container's staged objects: 256 bits from a
/// CSPRNG (rand's thread-local ChaCha12 generator, seeded and reseeded from
/// the operating system), written as 64 lowercase hex digits (safe in any
/// URL).
///
/// `Display` and [`as_str`](Self::as_str) give the token itself (it goes
/// into URLs); `Debug` redacts it so it does not end up in logs.
/// Equality is constant-time.
#[derive(Clone)]
pub struct Token {
    secret: [u8; TOKEN_BYTES],
    text: String,
}

impl Token {
    /// A fresh random token.
    pub fn generate() -> Self {
        let mut secret = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Token::from_secret(secret)
    }

    fn from_secret(secret: [u8; TOKEN_BYTES]) -> Self {
        Token { text: hex::encode(secret), secret }
    }

    /// The token as text, as it appears in URLs.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.secret).into()
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.secret.ct_eq(&other.secret).into()
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Token {
    type Err = Error;

    /// Parses a token as [`Display`](fmt::Display) wrote it, for hosts that
    /// keep tokens across restarts (see [`TokenRegistry::register`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] unless `text` is 64 lowercase hex digits.
    fn from_str(text: &str) -> Result<Self> {
        if text.len() != 2 * TOKEN_BYTES || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(Error::InvalidToken);
        }
        let mut secret = [0u8; TOKEN_BYTES];
        hex::decode_to_slice(text, &mut secret).map_err(|_| Error::InvalidToken)?;
        Ok(Token::from_secret(secret))
    }
}

/// Which token belongs to which container.
///
/// Cheap to clone (clones share the registry). Tokens live in memory only:
/// a host whose containers outlive it re-registers their tokens at start-up
/// with [`register`](Self::register) (for instance from the URL it gave
/// each container), or issues new ones to new containers.
///
/// [`resolve`](Self::resolve) never compares a presented token with a
/// stored one in variable time: entries are found by the SHA-256 of the
/// token, and the token itself is then compared in constant time.
#[derive(Clone, Default)]
pub struct TokenRegistry {
    inner: Arc<RwLock<Grants>>,
}

#[derive(Default)]
struct Grants {
    by_digest: HashMap<[u8; 32], Grant>,
    by_container: HashMap<String, Vec<[u8; 32]>>,
}

struct Grant {
    container: String,
    token: Token,
}

impl fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grants = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TokenRegistry").field("tokens", &grants.by_digest.len()).finish()
    }
}

impl TokenRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        TokenRegistry::default()
    }

    /// Issues a new token for `container`. Tokens issued before stay valid
    /// until [`revoke`](Self::revoke).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid container name.
    pub fn issue(&self, container: &str) -> Result<Token> {
        let token = Token::generate();
        self.register(container, token.clone())?;
        Ok(token)
    }

    /// Makes an existing `token` valid for `container` again, e.g. after a
    /// restart of the host. A token registered for another container is
    /// moved to this one.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for an invalid container name.
    pub fn register(&self, container: &str, token: Token) -> Result<()> {
        validate_container_name(container)?;
        let digest = token.digest();
        let mut grants = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let previous = grants.by_digest.insert(digest, Grant { container: container.to_owned(), token });
        if let Some(previous) = previous
            && let Some(list) = grants.by_container.get_mut(&previous.container)
        {
            list.retain(|d| *d != digest);
        }
        grants.by_container.entry(container.to_owned()).or_default().push(digest);
        Ok(())
    }

    /// Revokes every token of `container`; returns how many there were.
    /// Call it when the container is removed.
    pub fn revoke(&self, container: &str) -> usize {
        let mut grants = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let digests = grants.by_container.remove(container).unwrap_or_default();
        for digest in &digests {
            grants.by_digest.remove(digest);
        }
        digests.len()
    }

    /// The container `token` was issued for, if it is valid.
    pub fn resolve(&self, token: &str) -> Option<String> {
        let presented = Token::from_str(token).ok()?;
        let grants = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let grant = grants.by_digest.get(&presented.digest())?;
        (grant.token == presented).then(|| grant.container.clone())
    }

    /// How many containers hold at least one valid token.
    pub fn container_count(&self) -> usize {
        let grants = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        grants.by_container.values().filter(|l| !l.is_empty()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_resolve_revoke() {
        let registry = TokenRegistry::new();
        let a1 = registry.issue("a").expect("issue");
        let a2 = registry.issue("a").expect("issue");
        let b = registry.issue("b").expect("issue");
        assert_ne!(a1, a2);
        assert_eq!(registry.resolve(a1.as_str()).as_deref(), Some("a"));
        assert_eq!(registry.resolve(a2.as_str()).as_deref(), Some("a"));
        assert_eq!(registry.resolve(b.as_str()).as_deref(), Some("b"));
        assert_eq!(registry.container_count(), 2);
        assert_eq!(registry.revoke("a"), 2);
        assert_eq!(registry.revoke("a"), 0);
        assert_eq!(registry.resolve(a1.as_str()), None);
        assert_eq!(registry.resolve(b.as_str()).as_deref(), Some("b"));
        assert!(registry.issue("Not_A_Label").is_err());
    }

    #[test]
    fn malformed_tokens_resolve_to_nothing() {
        let registry = TokenRegistry::new();
        let token = registry.issue("a").expect("issue");
        let upper = token.as_str().to_ascii_uppercase();
        for bad in ["", "x", &token.as_str()[1..], &upper, &format!("{token}0")] {
            assert_eq!(registry.resolve(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tokens_parse_and_re_register() {
        let registry = TokenRegistry::new();
        let token = registry.issue("a").expect("issue");
        let text = token.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let parsed: Token = text.parse().expect("parse");
        assert_eq!(parsed, token);

        let restarted = TokenRegistry::new();
        restarted.register("a", parsed.clone()).expect("register");
        assert_eq!(restarted.resolve(&text).as_deref(), Some("a"));
        restarted.register("b", parsed).expect("move");
        assert_eq!(restarted.resolve(&text).as_deref(), Some("b"));
        assert_eq!(restarted.revoke("a"), 0);
        assert_eq!(restarted.revoke("b"), 1);
    }
}
