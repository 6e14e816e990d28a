//! `reserve-cluster`, the local control plane of `make dev` and the demo: up, found again, down
//! by its recorded pids, nothing left behind.

use std::process::Command;

use reserve_testkit::{ControlPlane, control_plane::text, watchdog};

fn reserve_cluster(dir: &std::path::Path, action: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reserve-cluster"))
        .arg("--dir")
        .arg(dir)
        .arg(action)
        .output()
        .expect("reserve-cluster runs")
}

/// Whether `pid` still runs (a zombie waiting for its parent counts as gone).
fn runs(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    state.is_some_and(|s| s != 'Z')
}

#[test]
fn up_reuses_and_down_stops_everything() {
    let dir = watchdog().unique_path("cluster", "");
    let up = reserve_cluster(&dir, "up");
    assert!(up.status.success(), "{}", text(&up));
    let kubeconfig = String::from_utf8_lossy(&up.stdout).trim().to_owned();
    assert_eq!(kubeconfig, dir.join("kubeconfig").display().to_string());
    assert!(dir.join("operator.kubeconfig").is_file());

    let cp = ControlPlane::attach(&dir).expect("found again by its directory");
    let (etcd, apiserver) = cp.pids();
    let out = cp.kubectl(&[
        "get",
        "crd",
        "customers.reserve.coffeechain.io",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The operator's kubeconfig acts as its ServiceAccount.
    let out = cp.kubectl_with(
        &dir.join("operator.kubeconfig"),
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(
        text(&out),
        "system:serviceaccount:reserve-system:reserve-operator"
    );

    let again = reserve_cluster(&dir, "up");
    assert!(
        again.status.success() && text(&again).contains("already running"),
        "{}",
        text(&again)
    );
    let env = reserve_cluster(&dir, "env");
    assert!(
        text(&env).starts_with(&format!("export KUBECONFIG={kubeconfig} PATH=")),
        "{}",
        text(&env)
    );

    let down = reserve_cluster(&dir, "down");
    assert!(down.status.success(), "{}", text(&down));
    for pid in [etcd.unwrap(), apiserver.unwrap()] {
        assert!(!runs(pid), "process {pid} still runs");
    }
    assert!(!dir.exists(), "the directory stays after down");
    assert!(ControlPlane::attach(&dir).is_none());
    let down = reserve_cluster(&dir, "down");
    assert!(down.status.success(), "down twice: {}", text(&down));
}
