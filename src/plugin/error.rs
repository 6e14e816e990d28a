//! What a user of the plugin reads when it fails: what was not found or could not be read.

use super::page;

/// Errors a user reads: what was not found or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    NotFound(#[from] page::NotFound),
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl PluginError {
    pub(super) fn read(what: impl Into<String>) -> impl FnOnce(kube::Error) -> PluginError {
        let what = what.into();
        move |source| PluginError::Read { what, source }
    }
}
