//! The kubeconfigs the control plane writes: the admin's, and any written to a file (as JSON,
//! readable only by its owner).

use std::{io::Write, path::Path};

use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

/// The admin's kubeconfig: `server` with its CA, and a token.
pub fn admin_kubeconfig(server: &str, ca_pem: &str, token: &str) -> Kubeconfig {
    use base64::Engine;
    let name = "reserve-local".to_owned();
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: name.clone(),
            cluster: Some(Cluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(ca_pem),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "admin".into(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.clone(),
            context: Some(Context {
                cluster: name.clone(),
                user: Some("admin".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Default::default()
    }
}

/// Writes a kubeconfig as JSON (which kubectl and kube-rs read as YAML), readable only by its
/// owner since it holds credentials.
pub fn write_kubeconfig(path: &Path, config: &Kubeconfig) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_vec_pretty(config).map_err(|e| format!("kubeconfig: {e}"))?;
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}
