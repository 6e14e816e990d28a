//! How to reach the control plane: kubeconfigs for the admin and for other identities, clients,
//! and the real kubectl.

use kube::config::AuthInfo;

use super::*;

impl ControlPlane {
    /// A kubeconfig that acts as `identity`: the admin credentials with `as:` / `as-groups:`
    /// (impersonation), honoured by kubectl and kube-rs alike.
    pub fn kubeconfig_as(&self, identity: &Identity) -> PathBuf {
        let path =
            watchdog().unique_path(&format!("kubeconfig-{}", identity.object_name()), ".yaml");
        self.write_kubeconfig_as(identity, &path)
            .expect("write kubeconfig");
        path
    }

    /// A kubeconfig that acts as `identity` and reaches the API server at `server` (e.g. a
    /// [`HoldingProxy`](crate::proxy::HoldingProxy) in front of it).
    pub fn kubeconfig_via(&self, identity: &Identity, server: &str) -> PathBuf {
        let path = self.kubeconfig_as(identity);
        let mut config = Kubeconfig::read_from(&path).expect("read the kubeconfig just written");
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut() {
                cluster.server = Some(server.to_owned());
            }
        }
        write_kubeconfig(&path, &config).expect("write kubeconfig");
        path
    }

    /// Writes a kubeconfig that acts as `identity` to `path`.
    pub fn write_kubeconfig_as(&self, identity: &Identity, path: &Path) -> Result<(), String> {
        let mut config = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| format!("{}: {e}", self.kubeconfig.display()))?;
        for named in &mut config.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(identity.user.clone());
                auth.impersonate_groups =
                    (!identity.groups.is_empty()).then(|| identity.groups.clone());
            }
        }
        write_kubeconfig(path, &config)
    }

    /// A kubeconfig that authenticates with the bearer `token` (e.g. a ServiceAccount's).
    pub fn kubeconfig_with_token(&self, token: &str, namespace: &str) -> PathBuf {
        let mut config = Kubeconfig::read_from(&self.kubeconfig).expect("read admin kubeconfig");
        for named in &mut config.auth_infos {
            named.auth_info = Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..Default::default()
            });
        }
        for named in &mut config.contexts {
            if let Some(context) = named.context.as_mut() {
                context.namespace = Some(namespace.to_owned());
            }
        }
        let path = watchdog().unique_path("kubeconfig-token", ".yaml");
        write_kubeconfig(&path, &config).expect("write kubeconfig");
        path
    }

    /// Admin client.
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    /// A client acting as `identity`.
    pub async fn client_as(&self, identity: &Identity) -> Client {
        client_for(&self.kubeconfig_as(identity)).await
    }

    /// The real kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    /// The real kubectl with the admin kubeconfig and `stdin` (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_with(&self.kubeconfig, args, Some(stdin))
    }

    /// The real kubectl with any kubeconfig.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .kubectl_command(kubeconfig, args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let writer = stdin.map(|text| {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let text = text.to_owned();
            std::thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            })
        });
        let out = child.wait_with_output().expect("wait for kubectl");
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        out
    }
}

impl ControlPlane {
    /// The real kubectl with any kubeconfig, not yet started (e.g. to run on another thread).
    pub fn kubectl_command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(&self.kubectl_cache)
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }
}
