//! Authorization by ownership: only a container's owner, or an admin,
//! reaches it, and the container is told who the user is.

use std::sync::Arc;

use async_trait::async_trait;
use berth_proxy::{Denied, ProxyHooks, Route, RouteTable, X_BERTH_EMAIL, X_BERTH_GROUPS, X_BERTH_USER};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Default label naming a container's owner.
pub const DEFAULT_OWNER_LABEL: &str = berth_fleet::DEFAULT_OWNER_LABEL;

/// Who is making a request, as the host application knows it.
///
/// Built with [`Identity::new`] and the `with_*` methods (fields may be
/// added, so it cannot be written as a literal outside this crate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// User name (must be a valid header value to reach containers).
    pub user: String,
    /// Admins see and manage every container.
    pub admin: bool,
    /// The user's groups, passed to containers in `X-Berth-Groups`.
    pub groups: Vec<String>,
    /// The user's email address, when the login knows it, passed to
    /// containers in `X-Berth-Email`.
    pub email: Option<String>,
    /// When set, this identity reaches only these containers (a session
    /// from a hand-off link, or one made for a container's own host):
    /// others are missing to it, and it launches nothing.
    pub only: Option<Vec<String>>,
}

impl Identity {
    /// A user who is not an admin, in no group, not limited to containers.
    pub fn new(user: impl Into<String>) -> Self {
        Identity { user: user.into(), admin: false, groups: Vec::new(), email: None, only: None }
    }

    /// Makes the identity an admin (or not).
    #[must_use]
    pub fn with_admin(mut self, admin: bool) -> Self {
        self.admin = admin;
        self
    }

    /// Sets the user's groups.
    #[must_use]
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }

    /// Sets the user's email address.
    #[must_use]
    pub fn with_email(mut self, email: Option<String>) -> Self {
        self.email = email;
        self
    }

    /// Limits the identity to `containers`.
    #[must_use]
    pub fn only(mut self, containers: Vec<String>) -> Self {
        self.only = Some(containers);
        self
    }

    /// Whether the identity's limit (if any) lets it reach `container`;
    /// ownership is checked separately.
    pub fn may_reach(&self, container: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|c| c == container))
    }

    /// Whether this identity may see a container owned by `owner` called
    /// `container`: within its limit, and an admin or the owner.
    pub fn may_see(&self, container: &str, owner: Option<&str>) -> bool {
        self.may_reach(container) && (self.admin || owner == Some(self.user.as_str()))
    }
}

/// How the hooks learn the user: from the host app's own authentication.
#[async_trait]
pub trait Identify: Send + Sync + 'static {
    /// The request's user, or `Ok(None)` when nobody is logged in.
    ///
    /// # Errors
    ///
    /// A [`Denied`] refuses the request outright, e.g. identity headers
    /// sent by a peer that is not a trusted proxy.
    async fn identify(&self, request: &http::request::Parts) -> Result<Option<Identity>, Denied>;

    /// A response given instead of identifying and forwarding a request
    /// for `container` (see [`ProxyHooks::intercept`]); none by default.
    fn intercept(&self, _request: &http::request::Parts, _container: &str) -> Option<Response<Full<Bytes>>> {
        None
    }

    /// What a request without a user gets instead of the plain 401 page,
    /// e.g. a redirect to a login page for browsers; none by default.
    fn login_page(
        &self,
        _request: &http::request::Parts,
        _container: &str,
        _json: bool,
    ) -> Option<Response<Full<Bytes>>> {
        None
    }
}

/// Reads the [`Identity`] that the host app's authentication middleware
/// put into the request's extensions (`req.extensions_mut().insert(identity)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionIdentity;

#[async_trait]
impl Identify for ExtensionIdentity {
    async fn identify(&self, request: &http::request::Parts) -> Result<Option<Identity>, Denied> {
        Ok(request.extensions.get::<Identity>().cloned())
    }
}

#[async_trait]
impl<I: Identify> Identify for Arc<I> {
    async fn identify(&self, request: &http::request::Parts) -> Result<Option<Identity>, Denied> {
        (**self).identify(request).await
    }

    fn intercept(&self, request: &http::request::Parts, container: &str) -> Option<Response<Full<Bytes>>> {
        (**self).intercept(request, container)
    }

    fn login_page(&self, request: &http::request::Parts, container: &str, json: bool) -> Option<Response<Full<Bytes>>> {
        (**self).login_page(request, container, json)
    }
}

/// [`ProxyHooks`] that let only a container's owner (the value of its
/// owner label) or an admin through, and pass the user to the container in
/// `X-Berth-User` (the groups in `X-Berth-Groups`, the email address in
/// `X-Berth-Email`). The proxy strips clients' copies of all three.
///
/// A request without a user gets 401 (or the [`Identify::login_page`]). A
/// user who does not own the container, or whose identity is limited to
/// other containers, gets the same 404 page as for a container that does
/// not exist, so names of other users' containers are not revealed.
/// Ownership is read from the route table's copy of the labels (one engine
/// call the first time a just-created container is asked for, none after).
pub struct OwnerHooks<I: Identify = ExtensionIdentity> {
    identify: I,
    table: Arc<RouteTable>,
    owner_label: String,
}

impl<I: Identify> std::fmt::Debug for OwnerHooks<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerHooks").field("owner_label", &self.owner_label).finish_non_exhaustive()
    }
}

impl<I: Identify> OwnerHooks<I> {
    /// Hooks checking `owner_label` on the containers of `table`.
    pub fn new(identify: I, table: Arc<RouteTable>, owner_label: impl Into<String>) -> Self {
        OwnerHooks { identify, table, owner_label: owner_label.into() }
    }
}

#[async_trait]
impl<I: Identify> ProxyHooks for OwnerHooks<I> {
    type Ctx = Identity;

    async fn authorize(&self, request: &http::request::Parts, container: &str) -> Result<Identity, Denied> {
        let Some(who) = self.identify.identify(request).await? else {
            return Err(Denied { status: StatusCode::UNAUTHORIZED, message: "log in to use this tool".into() });
        };
        let not_found = || Denied { status: StatusCode::NOT_FOUND, message: "no such tool".into() };
        if !who.may_reach(container) {
            return Err(not_found());
        }
        if who.admin {
            return Ok(who);
        }
        let owner =
            self.table.labels_or_fetch(container).await.and_then(|labels| labels.get(&self.owner_label).cloned());
        if who.may_see(container, owner.as_deref()) {
            Ok(who)
        } else {
            // Same answer as for a missing container: no enumeration.
            Err(not_found())
        }
    }

    fn intercept(&self, request: &http::request::Parts, container: &str) -> Option<Response<Full<Bytes>>> {
        self.identify.intercept(request, container)
    }

    fn denied_page(
        &self,
        request: &http::request::Parts,
        container: &str,
        denied: &Denied,
        json: bool,
    ) -> Response<Full<Bytes>> {
        if denied.status == StatusCode::UNAUTHORIZED
            && let Some(page) = self.identify.login_page(request, container, json)
        {
            return page;
        }
        if denied.status == StatusCode::NOT_FOUND {
            return self.not_found_page(container, json);
        }
        berth_proxy::pages::error(denied.status, &denied.message)
    }

    fn rewrite_upstream(&self, who: &Identity, _route: &Route, request: &mut http::request::Parts) {
        if let Ok(v) = HeaderValue::from_str(&who.user) {
            request.headers.insert(X_BERTH_USER, v);
        }
        if !who.groups.is_empty()
            && let Ok(v) = HeaderValue::from_str(&who.groups.join(","))
        {
            request.headers.insert(X_BERTH_GROUPS, v);
        }
        if let Some(Ok(v)) = who.email.as_deref().map(HeaderValue::from_str) {
            request.headers.insert(X_BERTH_EMAIL, v);
        }
    }
}
