//! The one way kubewire's components connect to the Kubernetes API: from a kubeconfig file (the
//! embedded API server writes one; on a real cluster it is the admin's or a node's).

use std::path::{Path, PathBuf};

/// Boxed sources keep the error small for every component that carries it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}")]
    Read {
        path: PathBuf,
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("loading kubeconfig {path}")]
    Load {
        path: PathBuf,
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("building a client from kubeconfig {path}")]
    Client {
        path: PathBuf,
        source: Box<kube::Error>,
    },
}

/// A client for the cluster, user and context that `path`'s current context names.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, ClientError> {
    let file = kube::config::Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|source| ClientError::Load {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
    kube::Client::try_from(config).map_err(|source| ClientError::Client {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}
