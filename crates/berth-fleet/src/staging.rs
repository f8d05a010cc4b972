//! Input delivery through berth's staging store (mode `url`): the input
//! document and data files are staged for the container, served under a
//! token only that container knows, and released with it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use berth_staging::{ByteStream, StagingService, StagingStoreExt, StagingUrls, Token};

use crate::error::{Error, Result};
use crate::fleet::ContainerResources;

/// A data file to stage for a container.
pub struct StagedFile {
    /// File name (validated by the store: no `/`, `..`, NUL, ...).
    pub name: String,
    /// Its content, streamed.
    pub body: ByteStream,
}

impl std::fmt::Debug for StagedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedFile").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Stages containers' inputs in a [`StagingService`] and hands out the URLs
/// containers fetch them from. Releases everything when a container goes
/// (it is the fleet's [`ContainerResources`]).
pub struct Stager {
    service: StagingService,
    urls: StagingUrls,
    tokens: Mutex<HashMap<String, Token>>,
}

impl std::fmt::Debug for Stager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stager").field("public_base", &self.urls.public_base()).finish_non_exhaustive()
    }
}

fn staging_error(context: &str, e: berth_staging::Error) -> Error {
    Error::Staging { context: context.to_owned(), source: Box::new(e) }
}

impl Stager {
    /// A stager over `service`, giving containers URLs under `urls`.
    pub fn new(service: StagingService, urls: StagingUrls) -> Self {
        Stager { service, urls, tokens: Mutex::default() }
    }

    /// The HTTP service that serves staged inputs (mount it where `urls` point).
    pub fn service(&self) -> &StagingService {
        &self.service
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container's token, issued on first use.
    fn token_for(&self, container: &str) -> Result<Token> {
        if let Some(t) = self.lock().get(container) {
            return Ok(t.clone());
        }
        let token = self.service.tokens().issue(container).map_err(|e| staging_error("issuing a token", e))?;
        self.lock().insert(container.to_owned(), token.clone());
        Ok(token)
    }

    /// Stages `document` as the container's input; returns its URL and the
    /// token in it.
    ///
    /// # Errors
    ///
    /// [`Error::Staging`] when the name is invalid or the store fails.
    pub async fn stage_input(&self, container: &str, document: &serde_json::Value) -> Result<(String, Token)> {
        let token = self.token_for(container)?;
        self.service
            .store()
            .put_input_json(container, document)
            .await
            .map_err(|e| staging_error("staging the input document", e))?;
        Ok((self.urls.input_url(&token), token))
    }

    /// Stages a data file for the container; returns its URL.
    ///
    /// # Errors
    ///
    /// [`Error::Staging`] for an invalid name, a file over the store's size
    /// limit, or a store failure (nothing is left behind).
    pub async fn stage_file(&self, container: &str, file: StagedFile) -> Result<String> {
        let token = self.token_for(container)?;
        self.service
            .store()
            .put_file(container, &file.name, file.body)
            .await
            .map_err(|e| staging_error(&format!("staging file {:?}", file.name), e))?;
        Ok(self.urls.file_url(&token, &file.name))
    }

    /// Makes `token` valid again for `container` (after a restart, tokens
    /// are read back from the containers' labels).
    ///
    /// # Errors
    ///
    /// [`Error::Staging`] for an invalid name.
    pub fn restore(&self, container: &str, token: Token) -> Result<()> {
        self.service.tokens().register(container, token.clone()).map_err(|e| staging_error("restoring a token", e))?;
        self.lock().insert(container.to_owned(), token);
        Ok(())
    }
}

#[async_trait]
impl ContainerResources for Stager {
    async fn release(&self, name: &str) -> std::result::Result<(), String> {
        self.lock().remove(name);
        self.service.remove_container(name).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn retain_only(&self, live: &HashSet<String>) -> std::result::Result<(), String> {
        let gone: Vec<String> = self.lock().keys().filter(|k| !live.contains(*k)).cloned().collect();
        let mut stored = self.service.store().containers().await.map_err(|e| e.to_string())?;
        stored.retain(|c| !live.contains(c));
        for name in gone.into_iter().chain(stored) {
            self.release(&name).await?;
        }
        Ok(())
    }
}
