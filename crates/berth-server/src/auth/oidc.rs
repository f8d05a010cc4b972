//! berth as an OpenID Connect relying party, on the `openidconnect`
//! crate: discovery (cached, fetched at the first login, so berth starts
//! and serves logged-in users while the provider is down), the
//! authorization-code flow with PKCE, `state` and `nonce`, and ID-token
//! validation (issuer, audience, expiry, nonce, signature through the
//! provider's JWKS, fetched again once when a signature does not verify,
//! for key rotation). A login's `state` works once: used states are kept
//! in the database, so a replayed callback is refused after a restart too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_history::{HistoryStore, TakeOutcome};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, StandardErrorResponse, StandardTokenResponse, TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use crate::config::OidcSection;

/// Claims beyond the standard ones (the groups claim, a custom user claim).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<IdFields, CoreTokenType>;
type Client = openidconnect::Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long discovered metadata (and its keys) is used before it is
/// fetched again.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// How long a login may take, from berth's redirect to the callback.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// A login under way, kept in a sealed cookie between the redirect to the
/// provider and the callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    /// Where to go after the login.
    pub next: String,
    /// When the login started (Unix seconds): a flow older than
    /// [`FLOW_TTL`] is refused whatever its cookie's own expiry.
    #[serde(default)]
    started: u64,
}

/// Why a login did not work.
#[derive(Debug)]
pub enum LoginError {
    /// The provider cannot be reached (a 503 page).
    Unavailable(String),
    /// The provider's answer is refused (a 403 page).
    Refused(String),
}

/// Who logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The user (the configured claim).
    pub user: String,
    /// The groups claim.
    pub groups: Vec<String>,
    /// The `email` claim, unless the provider says it is not verified
    /// (`email_verified: false`).
    pub email: Option<String>,
}

/// The relying party.
pub struct Oidc {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    user_claim: String,
    groups_claim: String,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(CoreProviderMetadata, Instant)>>,
    /// Where the states of finished logins are kept (single-use tokens).
    store: Arc<HistoryStore>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("issuer", &self.issuer).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Now in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Constant-time equality of two strings (through their hashes).
fn same(a: &str, b: &str) -> bool {
    super::session::hash(a) == super::session::hash(b)
}

impl Oidc {
    /// The relying party of `config`, called back at `redirect_url`,
    /// keeping used states in `store`.
    ///
    /// # Errors
    ///
    /// The redirect URL does not parse, or the HTTP client cannot be built.
    pub fn new(config: &OidcSection, redirect_url: &str, store: Arc<HistoryStore>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Following redirects would open the client up to SSRF.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Oidc {
            issuer: config.issuer.trim_end_matches('/').to_owned(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            scopes: config.scopes.iter().filter(|s| *s != "openid").cloned().collect(),
            user_claim: config.user_claim.clone(),
            groups_claim: config.groups_claim.clone(),
            redirect: RedirectUrl::new(redirect_url.to_owned())?,
            http,
            metadata: tokio::sync::Mutex::new(None),
            store,
        })
    }

    /// The issuer, for messages.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A client from the provider's metadata: cached, discovered again
    /// when older than `max_age`. When that fails, the old metadata serves
    /// if `keep_old`.
    async fn client(&self, max_age: Duration, keep_old: bool) -> Result<Client, LoginError> {
        let mut cached = self.metadata.lock().await;
        let stale = cached.as_ref().is_none_or(|(_, at)| at.elapsed() > max_age);
        if stale {
            let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|e| LoginError::Unavailable(e.to_string()))?;
            match CoreProviderMetadata::discover_async(issuer, &self.http).await {
                Ok(metadata) => *cached = Some((metadata, Instant::now())),
                Err(e) => {
                    let message = super::error_chain(&e);
                    tracing::warn!(issuer = %self.issuer, error = %message, "OpenID Connect discovery failed");
                    if cached.is_none() || !keep_old {
                        return Err(LoginError::Unavailable(message));
                    }
                }
            }
        }
        let Some((metadata, _)) = cached.as_ref() else {
            return Err(LoginError::Unavailable("no provider metadata".into()));
        };
        Ok(Client::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Starts a login that returns to `next`: the provider's authorization
    /// URL and the flow to keep until the callback.
    ///
    /// # Errors
    ///
    /// [`LoginError::Unavailable`] when the provider cannot be reached.
    pub async fn start(&self, next: String) -> Result<(String, Flow), LoginError> {
        // Asked again unless asked just now, so that a provider that went
        // away is a 503 page here, not a browser's connection error there.
        let client = self.client(Duration::from_secs(30), false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in &self.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        let flow = Flow {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            next,
            started: unix_now(),
        };
        Ok((url.to_string(), flow))
    }

    /// Marks `state` used, in the database: the first time only. A state
    /// there already is a replay (a restart does not forget it; rows go
    /// a day after the flow expired, when its cookie is long refused).
    async fn use_state(&self, state: &str) -> Result<(), LoginError> {
        let key = super::session::hash(&format!("oidc-state\0{state}"));
        let expires = SystemTime::now() + FLOW_TTL;
        let Err(e) = self.store.put_single_use(&key, "", expires).await else { return Ok(()) };
        // The insert fails for a state that is there; anything else is the
        // database failing, and the login is refused either way.
        match self.store.take_single_use(&key, SystemTime::now()).await {
            Ok(TakeOutcome::Unknown) | Err(_) => {
                tracing::warn!(error = %super::error_chain(&e), "recording a login's state failed");
                Err(LoginError::Unavailable(format!("berth's database failed: {}", super::error_chain(&e))))
            }
            Ok(_) => Err(LoginError::Refused("this login was completed already (a replayed state)".into())),
        }
    }

    /// Finishes the login `flow` with the callback's `code` and `state`.
    ///
    /// # Errors
    ///
    /// [`LoginError::Refused`] for a state that does not match or was used
    /// before, a code the provider refuses, an ID token that does not
    /// validate (issuer, audience, expiry, nonce, signature) or lacks the
    /// user claim; [`LoginError::Unavailable`] when the provider cannot be
    /// reached.
    pub async fn finish(&self, flow: &Flow, code: &str, state: &str) -> Result<LoggedIn, LoginError> {
        if !same(&flow.state, state) {
            return Err(LoginError::Refused("the login's state does not match this browser's login".into()));
        }
        if unix_now().saturating_sub(flow.started) > FLOW_TTL.as_secs() {
            return Err(LoginError::Refused("this login took too long (it expired); start again".into()));
        }
        self.use_state(state).await?;
        let client = self.client(METADATA_TTL, true).await?;
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Unavailable(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()));
        let tokens = match request.request_async(&self.http).await {
            Ok(tokens) => tokens,
            Err(RequestTokenError::Request(e)) => return Err(LoginError::Unavailable(super::error_chain(&e))),
            Err(e) => {
                return Err(LoginError::Refused(format!("the provider refused the login: {}", super::error_chain(&e))));
            }
        };
        let id_token =
            tokens.id_token().ok_or_else(|| LoginError::Refused("the provider sent no ID token".into()))?.clone();
        let nonce = Nonce::new(flow.nonce.clone());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            Err(first) => {
                // The provider may have rotated its keys: fetch them once more.
                let fresh = self.client(Duration::from_secs(10), true).await?;
                match id_token.claims(&fresh.id_token_verifier(), &nonce) {
                    Ok(claims) => claims.clone(),
                    Err(_) => {
                        let message = super::error_chain(&first);
                        tracing::warn!(issuer = %self.issuer, error = %message, "an ID token was refused");
                        return Err(LoginError::Refused(format!("the ID token was refused: {message}")));
                    }
                }
            }
        };
        let extra = &claims.additional_claims().rest;
        let user = match self.user_claim.as_str() {
            "sub" => Some(claims.subject().as_str().to_owned()),
            "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_owned()),
            "email" => claims.email().map(|e| e.as_str().to_owned()),
            other => extra.get(other).and_then(|v| v.as_str()).map(str::to_owned),
        };
        let user = user.filter(|u| !u.is_empty() && u.len() <= 255 && !u.chars().any(char::is_control));
        let Some(user) = user else {
            return Err(LoginError::Refused(format!(
                "the ID token has no usable {:?} claim (set auth.oidc.user_claim)",
                self.user_claim
            )));
        };
        let groups = match extra.get(&self.groups_claim) {
            Some(serde_json::Value::Array(list)) => list.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect(),
            Some(serde_json::Value::String(s)) => {
                s.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        let email = claims
            .email()
            .filter(|_| claims.email_verified() != Some(false))
            .and_then(|e| super::usable_email(e.as_str()));
        Ok(LoggedIn { user, groups, email })
    }
}
