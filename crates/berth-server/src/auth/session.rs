//! Sessions: random ids in encrypted, authenticated cookies (the `cookie`
//! crate's private jar: AES-256-GCM with the cookie's name as associated
//! data), their data in the SQLite database (under a hash of the id, so
//! the database alone holds no usable session), a small cache in front of
//! it for the proxy's hot path, and the one-time tickets that carry a
//! session to a container's own host.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use berth_history::HistoryStore;
use cookie::{Cookie, CookieJar, Key, SameSite};
use http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionData {
    /// The user.
    pub user: String,
    /// The user's groups at login.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The user's email address at login, when the login gave one.
    #[serde(default)]
    pub email: Option<String>,
    /// The containers this session is limited to (hand-off links,
    /// container hosts); all the user's when absent.
    #[serde(default)]
    pub only: Option<Vec<String>>,
    /// The container whose own host this session's cookie was set on
    /// (hostname routing); `None`: berth's own host. A session counts only
    /// on its host, so a cookie planted on another host (a sibling host's
    /// `Domain` cookie) is no session there.
    #[serde(default)]
    pub host: Option<String>,
}

/// How long a host ticket (the step from berth's host to a container's) is valid.
const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most sessions kept in the cache; it is emptied when full.
const CACHE_MAX: usize = 10_000;
/// How long a cached session is believed before the database is asked again.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// berth's sessions.
pub struct Sessions {
    key: Key,
    csrf_key: [u8; 32],
    store: Arc<HistoryStore>,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// Whether cookies carry `Secure`.
    pub secure: bool,
    /// Lifetime of new sessions.
    pub ttl: Duration,
    cache: Mutex<HashMap<String, (SessionData, SystemTime, Instant)>>,
    /// Host tickets by hash: the session and the container it is for.
    tickets: Mutex<HashMap<String, (String, String, Instant)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("cookie_name", &self.cookie_name).finish_non_exhaustive()
    }
}

/// 32 random bytes as hex.
pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of `secret`: how secrets are stored.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Reads the 64-byte cookie key from `path` (hex), making it (mode 0600)
/// when the file does not exist.
///
/// # Errors
///
/// The file cannot be read or written, or does not hold 64 bytes of hex.
pub fn load_key(path: &Path) -> anyhow::Result<Key> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!("{}{}\n", random_hex(), random_hex());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).with_context(|| format!("creating the cookie key {}", path.display()))?;
            std::io::Write::write_all(&mut file, text.as_bytes())
                .with_context(|| format!("writing the cookie key {}", path.display()))?;
            tracing::info!(path = %path.display(), "made a new cookie key");
            text
        }
        Err(e) => return Err(e).with_context(|| format!("reading the cookie key {}", path.display())),
    };
    let text = text.trim();
    let bytes: Option<Vec<u8>> = (text.len() == 128)
        .then(|| (0..64).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()).collect())
        .flatten();
    let bytes = bytes.with_context(|| format!("{} does not hold a cookie key (128 hex digits)", path.display()))?;
    Key::try_from(bytes.as_slice()).map_err(|e| anyhow::anyhow!("cookie key {}: {e}", path.display()))
}

/// The values of the cookies called `name` in `headers`.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(move |(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
}

impl Sessions {
    /// Sessions under `key`, stored in `store`.
    pub fn new(key: Key, store: Arc<HistoryStore>, cookie_name: String, secure: bool, ttl: Duration) -> Self {
        use hmac::Mac;
        // A key of its own for CSRF tokens, derived from the signing half.
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(key.signing()).expect("HMAC takes any key length");
        mac.update(b"berth csrf key");
        let csrf_key: [u8; 32] = mac.finalize().into_bytes().into();
        Sessions { key, csrf_key, store, cookie_name, secure, ttl, cache: Mutex::default(), tickets: Mutex::default() }
    }

    /// The database the sessions are kept in.
    pub fn store(&self) -> &HistoryStore {
        &self.store
    }

    /// `value` encrypted for a cookie called `name`.
    pub fn seal(&self, name: &str, value: &str) -> String {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key).add(Cookie::new(name.to_owned(), value.to_owned()));
        jar.get(name).map(|c| c.value().to_owned()).unwrap_or_default()
    }

    /// The plain value of a cookie `name` sealed by [`seal`](Self::seal);
    /// `None` when it was not, or was tampered with.
    pub fn open(&self, name: &str, sealed: &str) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.to_owned(), sealed.to_owned()));
        jar.private(&self.key).get(name).map(|c| c.value().to_owned())
    }

    /// A `Set-Cookie` value for cookie `name` = `value` (sealed when
    /// `seal`), lasting `max_age` (`None`: deletes it), on `path`.
    pub fn set_cookie(
        &self,
        name: &str,
        value: &str,
        seal: bool,
        max_age: Option<Duration>,
        path: &str,
        same_site: SameSite,
    ) -> HeaderValue {
        let value = if seal { self.seal(name, value) } else { value.to_owned() };
        let age = max_age.map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let cookie = Cookie::build((name.to_owned(), value))
            .path(path.to_owned())
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .max_age(cookie::time::Duration::seconds(age))
            .build();
        HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }

    /// The `Set-Cookie` value carrying session `id`.
    pub fn session_cookie(&self, id: &str) -> HeaderValue {
        self.set_cookie(&self.cookie_name, id, true, Some(self.ttl), "/", SameSite::Lax)
    }

    /// The `Set-Cookie` value removing the session cookie.
    pub fn clear_session_cookie(&self) -> HeaderValue {
        self.set_cookie(&self.cookie_name, "", false, None, "/", SameSite::Lax)
    }

    /// The session ids in `headers`' session cookies that decrypt (a
    /// browser may send several of the same name: its own, and one a
    /// sibling host planted for a parent domain).
    pub fn session_ids(&self, headers: &HeaderMap) -> Vec<String> {
        cookie_values(headers, &self.cookie_name).filter_map(|v| self.open(&self.cookie_name, &v)).collect()
    }

    /// The first live session among `headers`' session cookies made for
    /// `host` (a container's name for its own host, `None` for berth's):
    /// its id, data and expiry. Sessions of other hosts are ignored.
    pub async fn find(&self, headers: &HeaderMap, host: Option<&str>) -> Option<(String, SessionData, SystemTime)> {
        for id in self.session_ids(headers) {
            if let Some((data, expires)) = self.load(&id).await {
                if data.host.as_deref() == host {
                    return Some((id, data, expires));
                }
                tracing::debug!(cookie_host = ?data.host, request_host = ?host, "a session cookie of another host: ignored");
            }
        }
        None
    }

    /// A new session holding `data`; its id and expiry.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn create(&self, data: &SessionData) -> Result<(String, SystemTime), berth_history::Error> {
        let id = random_hex();
        let expires = SystemTime::now() + self.ttl;
        let text = serde_json::to_string(data).unwrap_or_default();
        self.store.save_session(&hash(&id), &text, expires).await?;
        Ok((id, expires))
    }

    /// Session `id`'s data and expiry, when it exists and has not expired.
    /// A database failure is logged and treated as no session.
    pub async fn load(&self, id: &str) -> Option<(SessionData, SystemTime)> {
        let key = hash(id);
        let now = SystemTime::now();
        if let Some((data, expires, at)) = self.lock_cache().get(&key).cloned()
            && expires > now
            && at.elapsed() < CACHE_TTL
        {
            return Some((data, expires));
        }
        match self.store.load_session(&key, now).await {
            Ok(Some((text, expires))) => {
                let data: SessionData = serde_json::from_str(&text).ok()?;
                let mut cache = self.lock_cache();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (data.clone(), expires, Instant::now()));
                Some((data, expires))
            }
            Ok(None) => {
                self.lock_cache().remove(&key);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a session failed; treating the request as logged out");
                None
            }
        }
    }

    /// Ends session `id` (logout).
    pub async fn delete(&self, id: &str) {
        let key = hash(id);
        self.lock_cache().remove(&key);
        if let Err(e) = self.store.delete_session(&key).await {
            tracing::warn!(error = %e, "deleting a session failed");
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SessionData, SystemTime, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A one-time ticket (valid [`TICKET_TTL`]) that hands session `id` to
    /// the host of `container`, and no other.
    pub fn issue_ticket(&self, id: &str, container: &str) -> String {
        let ticket = random_hex();
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, (_, _, at)| at.elapsed() < TICKET_TTL);
        tickets.insert(hash(&ticket), (id.to_owned(), container.to_owned(), Instant::now()));
        ticket
    }

    /// The session a ticket carries to `container`'s host, once: it is
    /// used up, also when presented on another container's host (where it
    /// is refused).
    pub fn take_ticket(&self, ticket: &str, container: &str) -> Option<String> {
        let mut tickets = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let (id, for_container, at) = tickets.remove(&hash(ticket))?;
        (at.elapsed() < TICKET_TTL && for_container == container).then_some(id)
    }

    /// The CSRF token of forms for `user` in a browser whose CSRF cookie
    /// holds `nonce`.
    pub fn csrf_token(&self, nonce: &str, user: &str) -> String {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(&self.csrf_key).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(user.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token for `nonce` and `user` (compared
    /// in constant time).
    pub fn csrf_ok(&self, nonce: &str, user: &str, token: &str) -> bool {
        let want = self.csrf_token(nonce, user);
        want.len() == token.len() && want.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        let store = Arc::new(HistoryStore::in_memory().unwrap());
        Sessions::new(Key::generate(), store, "berth_session".into(), false, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn cookies_are_sealed_and_sessions_stored() {
        let s = sessions();
        let data = SessionData { user: "ann".into(), groups: vec!["g".into()], email: None, only: None, host: None };
        let (id, _) = s.create(&data).await.unwrap();
        let set = s.session_cookie(&id);
        let set = set.to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"), "{set}");
        assert!(!set.contains(&id), "the id is not readable in the cookie");
        let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; berth_session={value}").parse().unwrap());
        assert_eq!(s.session_ids(&headers), std::slice::from_ref(&id));
        assert_eq!(s.find(&headers, None).await.map(|(i, ..)| i).as_deref(), Some(id.as_str()));
        assert_eq!(s.find(&headers, Some("viz")).await, None, "berth's own session is none on a container's host");
        assert_eq!(s.load(&id).await.unwrap().0, data);
        // Tampered, or moved to another cookie name: nothing.
        let mut bad = value.to_owned();
        bad.replace_range(5..6, if &value[5..6] == "A" { "B" } else { "A" });
        assert_eq!(s.open("berth_session", &bad), None);
        assert_eq!(s.open("other", value), None);
        s.delete(&id).await;
        assert_eq!(s.load(&id).await, None);
        // Tickets work once, on the host of their container only.
        let t = s.issue_ticket("sid", "viz");
        assert_eq!(s.take_ticket(&t, "viz").as_deref(), Some("sid"));
        assert_eq!(s.take_ticket(&t, "viz"), None);
        let t = s.issue_ticket("sid", "viz");
        assert_eq!(s.take_ticket(&t, "other"), None, "a ticket for viz on another container's host");
        assert_eq!(s.take_ticket(&t, "viz"), None, "and it is used up");
        // CSRF tokens are bound to the nonce and the user.
        let token = s.csrf_token("n1", "ann");
        assert!(s.csrf_ok("n1", "ann", &token));
        assert!(!s.csrf_ok("n2", "ann", &token) && !s.csrf_ok("n1", "bob", &token));
    }

    /// A browser sends every cookie of the name it has for a host: its
    /// own, and one a sibling host planted for the parent domain. Each
    /// session counts on its own host only.
    #[tokio::test]
    async fn sessions_count_on_their_own_host_only() {
        let s = sessions();
        let session = |user: &str, host: Option<&str>| SessionData {
            user: user.into(),
            groups: Vec::new(),
            email: None,
            only: host.map(|h| vec![h.to_owned()]),
            host: host.map(str::to_owned),
        };
        let value = |id: &str| {
            let set = s.session_cookie(id);
            set.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
        };
        let (mallory_main, _) = s.create(&session("mallory", None)).await.unwrap();
        let (mallory_host, _) = s.create(&session("mallory", Some("mtool"))).await.unwrap();
        let (alice_host, _) = s.create(&session("alice", Some("atool"))).await.unwrap();
        // On alice's container host: mallory's planted cookies come first
        // and are ignored; alice's own counts.
        let mut headers = HeaderMap::new();
        let cookies = format!(
            "berth_session={}; berth_session={}; berth_session={}",
            value(&mallory_main),
            value(&mallory_host),
            value(&alice_host)
        );
        headers.insert(header::COOKIE, cookies.parse().unwrap());
        let (id, data, _) = s.find(&headers, Some("atool")).await.unwrap();
        assert_eq!((id, data.user.as_str()), (alice_host.clone(), "alice"));
        // mallory's host session on berth's host, alice's on mallory's: none.
        let mut planted = HeaderMap::new();
        planted.insert(header::COOKIE, format!("berth_session={}", value(&mallory_host)).parse().unwrap());
        assert_eq!(s.find(&planted, None).await, None);
        planted.insert(header::COOKIE, format!("berth_session={}", value(&alice_host)).parse().unwrap());
        assert_eq!(s.find(&planted, Some("mtool")).await, None);
    }

    #[test]
    fn keys_are_made_once_and_checked() {
        let dir = std::env::temp_dir().join(format!("berth-key-{}", std::process::id()));
        let path = dir.join("session.key");
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_key(&path).unwrap();
        let b = load_key(&path).unwrap();
        assert_eq!(a.master(), b.master());
        std::fs::write(&path, "short").unwrap();
        assert!(load_key(&path).unwrap_err().to_string().contains("128 hex digits"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
