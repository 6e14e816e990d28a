//! The pinned control-plane binaries, built once by `hack/control-plane-tools.sh` into a cache
//! outside the repository.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The repository this kit belongs to.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kit lives in a folder of the repository")
}

/// Where kube-apiserver, kubectl and etcd live, building them first if they are missing.
pub fn bin_dir() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_by(&BIN, "hack/control-plane-tools.sh")
}

/// Where the node's kubelet, kube-controller-manager and kube-scheduler live (beside
/// kube-apiserver), building them first if they are missing.
pub fn node_bin_dir() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_by_with(&BIN, "hack/control-plane-tools.sh", &["--node"])
}

/// Where helm, promtool and the health helper live, building them first if they are missing.
pub fn ecosystem_bin_dir() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_by(&BIN, "hack/ecosystem-tools.sh")
}

/// Where velero, its AWS plugin (`plugins/`) and moto (`moto/bin/moto_server`) live, building
/// them first if they are missing (`make test-velero`).
pub fn velero_bin_dir() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    built_by(&BIN, "hack/velero-tools.sh")
}

fn built_by(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    script: &str,
) -> Result<&'static Path, String> {
    built_by_with(cell, script, &[])
}

fn built_by_with(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    script: &str,
    args: &[&str],
) -> Result<&'static Path, String> {
    cell.get_or_init(|| {
        let script = repo_root().join(script);
        let out = Command::new(&script)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}
