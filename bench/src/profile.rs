//! kube-apiserver's CPU profile over a window (`--profile-restarts`, `--profile-generator`),
//! for finding out what a measured figure is spent on. Read the file with
//! `go tool pprof -top <file>`.

use std::{path::PathBuf, process::Stdio, thread::JoinHandle, time::Duration};

use reserve_testkit::ControlPlane;

use crate::context::say;

/// A profile being recorded; [`Recording::finish`] waits for it.
pub struct Recording(JoinHandle<Result<PathBuf, String>>);

/// Starts recording `window` of kube-apiserver's CPU profile into `path` (the API server
/// must have been started with profiling on), through the real kubectl as the admin.
pub fn record(cp: &ControlPlane, window: Duration, path: PathBuf) -> Recording {
    let query = format!("/debug/pprof/profile?seconds={}", window.as_secs().max(1));
    let mut kubectl = cp.kubectl_command(cp.kubeconfig(), &["get", "--raw", &query]);
    kubectl.stdin(Stdio::null());
    Recording(std::thread::spawn(move || {
        let out = kubectl
            .output()
            .map_err(|e| format!("running kubectl for the profile: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "kube-apiserver's profile: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        std::fs::write(&path, &out.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }))
}

impl Recording {
    /// Waits for the profile to be written, and says where it is.
    pub fn finish(self) -> Result<(), String> {
        let path = self
            .0
            .join()
            .map_err(|_| "the profile's thread panicked".to_owned())??;
        say(format!(
            "  kube-apiserver's CPU profile: go tool pprof -top {}",
            path.display()
        ));
        Ok(())
    }
}
