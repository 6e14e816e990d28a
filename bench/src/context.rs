//! What every measurement needs: the control plane, the clients, the settings; and how the
//! bench speaks.

use std::{path::PathBuf, time::Duration};

use kube::Client;
use reserve_testkit::ControlPlane;

/// What every measurement needs.
pub struct Context {
    pub cp: ControlPlane,
    /// The admin, for watching.
    pub client: Client,
    /// The load generator: a user of its own, so priority and fairness treat it like any writer.
    pub generator: Client,
    pub operator_bin: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub operator_user: String,
    /// The operator's identity, for the floor's status writes (the policy admits no one else).
    pub as_operator: Client,
    pub out: PathBuf,
    pub customers: usize,
    pub concurrency: usize,
    pub seed: u64,
    pub converge_timeout: u64,
    pub settle: u64,
    pub floor: bool,
    /// Whether each converge point first times the generator with no operator.
    pub alone: bool,
    /// How long to profile kube-apiserver from each restart's start, if at all.
    pub profile_restarts: Option<Duration>,
    /// How long to profile kube-apiserver from the start of each generator run, if at all.
    pub profile_generator: Option<Duration>,
    pub rate: f64,
    pub seconds: f64,
    pub flowschema: bool,
}

impl Context {
    /// kube-apiserver's CPU (user + system) so far, from /proc.
    pub fn apiserver_cpu_seconds(&self) -> Result<f64, String> {
        cpu_seconds(self.cp.pids().1, "kube-apiserver")
    }

    /// The CPU so far of the other processes sharing the machine with the operator: etcd and
    /// this bench (its generator and watches).
    pub fn etcd_and_bench_cpu_seconds(&self) -> Result<(f64, f64), String> {
        Ok((
            cpu_seconds(self.cp.pids().0, "etcd")?,
            cpu_seconds(Some(std::process::id()), "the bench")?,
        ))
    }
}

fn cpu_seconds(pid: Option<u32>, what: &str) -> Result<f64, String> {
    pid.and_then(reserve_testkit::process::ProcStats::of)
        .map(|s| s.cpu_seconds)
        .ok_or_else(|| format!("{what}'s /proc stats are not readable"))
}

pub fn say(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}
