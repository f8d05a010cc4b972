//! Authorization by ownership: only a container's owner, or an admin,
//! reaches it, and the container is told who the user is.

use std::sync::Arc;

use async_trait::async_trait;
use berth_proxy::{Denied, ProxyHooks, Route, RouteTable, X_BERTH_USER};
use http::{HeaderValue, StatusCode};

/// Default label naming a container's owner.
pub const DEFAULT_OWNER_LABEL: &str = "berth-owner";

/// Who is making a request, as the host application knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (must be a valid header value to reach containers).
    pub user: String,
    /// Admins reach every container.
    pub admin: bool,
}

/// How the hooks learn the user: from the host app's own authentication.
#[async_trait]
pub trait Identify: Send + Sync + 'static {
    /// The request's user, or `None` when nobody is logged in.
    async fn identify(&self, request: &http::request::Parts) -> Option<Identity>;
}

/// Reads the [`Identity`] that the host app's authentication middleware
/// put into the request's extensions (`req.extensions_mut().insert(identity)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtensionIdentity;

#[async_trait]
impl Identify for ExtensionIdentity {
    async fn identify(&self, request: &http::request::Parts) -> Option<Identity> {
        request.extensions.get::<Identity>().cloned()
    }
}

/// [`ProxyHooks`] that let only a container's owner (the value of its
/// owner label) or an admin through, and pass the user to the container in
/// `X-Berth-User`.
///
/// A request without a user gets 401. A user who does not own the
/// container gets the same 404 as for a container that does not exist,
/// so names of other users' containers are not revealed. Ownership is read
/// from the route table's copy of the labels (one engine call the first
/// time a just-created container is asked for, none after).
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
        let Some(who) = self.identify.identify(request).await else {
            return Err(Denied { status: StatusCode::UNAUTHORIZED, message: "log in to use this tool".into() });
        };
        if who.admin {
            return Ok(who);
        }
        let owner =
            self.table.labels_or_fetch(container).await.and_then(|labels| labels.get(&self.owner_label).cloned());
        if owner.as_deref() == Some(who.user.as_str()) {
            Ok(who)
        } else {
            // Same answer as for a missing container: no enumeration.
            Err(Denied { status: StatusCode::NOT_FOUND, message: "no such tool".into() })
        }
    }

    fn rewrite_upstream(&self, who: &Identity, _route: &Route, request: &mut http::request::Parts) {
        if let Ok(v) = HeaderValue::from_str(&who.user) {
            request.headers.insert(X_BERTH_USER, v);
        }
    }
}
