//! Velero on the shared control plane: the server as a local process acting as Velero's
//! ServiceAccount (`velero/velero`, cluster-admin as `velero install` binds it), its AWS
//! object-store plugin, and an S3 on loopback (moto), all built by `hack/velero-tools.sh`.
//!
//! Nothing leaves the machine: the object store, the metrics and the profiler listen on
//! 127.0.0.1, and the AWS SDK is told not to look for instance metadata.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use crate::{
    ControlPlane, Identity, Lifetime, Proc, control_plane::text, free_port, tools, watchdog,
};

pub const NAMESPACE: &str = "velero";
const BUCKET: &str = "velero";
/// Velero reads its own image from its Deployment when it restores (for the init containers it
/// would add to pods); the server runs here as a process, so the Deployment `velero install`
/// creates stands there scaled to zero.
const VELERO_IMAGE_TAG: &str = "v1.18.3";
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);
/// The phases a backup or restore ends in.
const FINISHED: &[&str] = &["Completed", "PartiallyFailed", "Failed", "FailedValidation"];

/// A running Velero server with its object store (both stopped by their pids when this
/// process ends).
pub struct Velero {
    bin: PathBuf,
    log: PathBuf,
    server: Proc,
    _store: Proc,
}

impl Velero {
    /// Builds (once) and starts moto and the Velero server, installs Velero's CRDs, its
    /// namespace, ServiceAccount and binding, and a default BackupStorageLocation on the store;
    /// returns once the location is Available.
    pub async fn start() -> Velero {
        let bin = tools::velero_bin_dir()
            .unwrap_or_else(|e| panic!("velero: {e}"))
            .to_path_buf();
        let cp = ControlPlane::shared();
        let log = watchdog().unique_path("velero", ".log");
        let (store, port) = start_store(&bin, &log).await;

        let crds = Command::new(bin.join("velero"))
            .args(["install", "--crds-only", "--dry-run", "-o", "yaml"])
            .output()
            .expect("velero install --crds-only");
        assert!(crds.status.success(), "velero install: {}", text(&crds));
        let crds = String::from_utf8_lossy(&crds.stdout).into_owned();
        kubectl_ok(cp, &["apply", "--server-side", "-f", "-"], Some(&crds));
        kubectl_ok(
            cp,
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "-l",
                "component=velero",
            ],
            None,
        );
        let setup = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: velero\n  namespace: {NAMESPACE}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: velero\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n\
             subjects:\n- kind: ServiceAccount\n  name: velero\n  namespace: {NAMESPACE}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: velero\n  namespace: {NAMESPACE}\n\
             spec:\n  replicas: 0\n  selector:\n    matchLabels:\n      deploy: velero\n  template:\n    \
             metadata:\n      labels:\n        deploy: velero\n    spec:\n      serviceAccountName: velero\n      \
             containers:\n      - name: velero\n        image: velero/velero:{VELERO_IMAGE_TAG}\n---\n\
             apiVersion: velero.io/v1\nkind: BackupStorageLocation\nmetadata:\n  name: default\n  namespace: {NAMESPACE}\n\
             spec:\n  provider: aws\n  default: true\n  objectStorage:\n    bucket: {BUCKET}\n  config:\n    \
             region: minio\n    s3ForcePathStyle: \"true\"\n    s3Url: http://127.0.0.1:{port}\n    \
             checksumAlgorithm: \"\"\n"
        );
        kubectl_ok(cp, &["apply", "-f", "-"], Some(&setup));

        let kubeconfig = cp.kubeconfig_as(&Identity::service_account(NAMESPACE, "velero"));
        let scratch = watchdog().unique_path("velero-scratch", "");
        std::fs::create_dir_all(&scratch).expect("velero scratch directory");
        let server = Proc::spawn(
            Command::new(bin.join("velero"))
                .arg("server")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--plugin-dir")
                .arg(bin.join("plugins"))
                .args(["--namespace", NAMESPACE])
                // Port 0: nothing here reads them, and a port chosen beforehand may be taken.
                .args(["--metrics-address", "127.0.0.1:0"])
                .args(["--profiler-address", "127.0.0.1:0"])
                .args(["--store-validation-frequency", "5s"])
                .env("VELERO_NAMESPACE", NAMESPACE)
                .env("VELERO_SCRATCH_DIR", &scratch)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY")
                .env_remove("KUBECONFIG"),
            &log,
            Lifetime::ThisProcess,
        )
        .expect("start velero server");
        let mut velero = Velero {
            bin,
            log,
            server,
            _store: store,
        };
        velero
            .until_phase("backupstoragelocation/default", &["Available"])
            .await;
        velero
    }

    /// `velero backup create NAME --include-namespaces NS --wait`; panics unless Completed.
    pub async fn backup(&mut self, name: &str, namespace: &str) {
        self.cli(&[
            "backup",
            "create",
            name,
            "--include-namespaces",
            namespace,
            "--wait",
        ]);
        let phase = self
            .until_phase(&format!("backups.velero.io/{name}"), FINISHED)
            .await;
        assert_eq!(
            phase,
            "Completed",
            "backup {name}: {}",
            self.describe("backup", name)
        );
    }

    /// `velero restore create NAME --from-backup BACKUP --status-include-resources KINDS --wait`;
    /// returns its phase and `velero restore describe --details`.
    pub async fn restore(&mut self, name: &str, backup: &str, status_of: &str) -> (String, String) {
        self.cli(&[
            "restore",
            "create",
            name,
            "--from-backup",
            backup,
            "--status-include-resources",
            status_of,
            "--wait",
        ]);
        let phase = self
            .until_phase(&format!("restores.velero.io/{name}"), FINISHED)
            .await;
        (phase, self.describe("restore", name))
    }

    fn describe(&self, kind: &str, name: &str) -> String {
        let out = self.run(&[kind, "describe", name, "--details"]);
        format!(
            "{}\n--- velero log (tail) ---\n{}",
            text(&out),
            self.log_tail()
        )
    }

    /// The last lines of the store's and the server's log.
    pub fn log_tail(&self) -> String {
        crate::process::tail(&self.log, 60)
    }

    fn cli(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "velero {}: {}\n{}",
            args.join(" "),
            text(&out),
            self.log_tail()
        );
    }

    fn run(&self, args: &[&str]) -> Output {
        let cp = ControlPlane::shared();
        Command::new(self.bin.join("velero"))
            .arg("--kubeconfig")
            .arg(cp.kubeconfig())
            .args(["--namespace", NAMESPACE])
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run velero")
    }

    /// Waits until the phase of `object` (in Velero's namespace) is one of `phases`.
    async fn until_phase(&mut self, object: &str, phases: &[&str]) -> String {
        let cp = ControlPlane::shared();
        let what = format!("{object} to reach one of {phases:?}");
        let log = self.log.clone();
        let server = &mut self.server;
        let phase = tokio::time::timeout(WAIT, async {
            loop {
                if !server.running() {
                    panic!(
                        "the velero server exited\n{}",
                        crate::process::tail(&log, 60)
                    );
                }
                let args = [
                    "get",
                    "-n",
                    NAMESPACE,
                    object,
                    "-o",
                    "jsonpath={.status.phase}",
                ];
                let out = cp.kubectl(&args);
                let phase = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if phases.contains(&phase.as_str()) {
                    return phase;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        phase.unwrap_or_else(|_| panic!("timed out waiting for {what}\n{}", self.log_tail()))
    }
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) {
    let out = cp.kubectl_with(cp.kubeconfig(), args, stdin);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        text(&out)
    );
}

/// Starts moto on a free port of 127.0.0.1 and creates the bucket; tries another port if the
/// one chosen was taken meanwhile.
async fn start_store(bin: &Path, log: &Path) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut store = Proc::spawn(
            Command::new(bin.join("moto/bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env_remove("HTTP_PROXY")
                .env_remove("HTTPS_PROXY"),
            log,
            Lifetime::ThisProcess,
        )
        .expect("start moto_server");
        if create_bucket(&mut store, port).await {
            return (store, port);
        }
        store.kill();
    }
    panic!("moto did not start\n{}", crate::process::tail(log, 30));
}

/// Creates the bucket once moto answers (path-style `PUT /BUCKET`; moto checks no signature);
/// false if moto exited first or did not answer in time.
async fn create_bucket(store: &mut Proc, port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/{BUCKET}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.running() && tokio::time::Instant::now() < deadline {
        let answer = client.put(&url).send().await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}
