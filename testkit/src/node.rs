//! A control plane able to host pods, plus one node: containerd, runc and the CNI bridge from
//! Debian's packages; kubelet, kube-controller-manager and kube-scheduler built like the other
//! tools; images imported from OCI archives (nothing is pulled). Pod traffic never leaves the
//! machine. Teardown leaves no process, mount, network namespace, cgroup, iptables rule or
//! bridge behind, and [`Node::leftovers`] says so.

mod config;
pub mod host;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    ControlPlane, Options,
    control_plane::{AuditMode, NODE_TOKEN, text},
    ports::free_port,
    process::{Lifetime, Proc},
    tools,
};
pub use config::PAUSE_IMAGE;
use config::{EVICTION_FREE, cni_config, containerd_config, kubelet_config_yaml};
use host::Changes;

/// Programs the node needs from the host's packages.
const HOST_PROGRAMS: [&str; 7] = [
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "iptables",
    "ip",
    "buildah",
];

pub struct Node {
    pub cp: ControlPlane,
    dir: PathBuf,
    pub name: String,
    socket: PathBuf,
}

/// What `down` needs to find everything again.
#[derive(Serialize, Deserialize)]
struct State {
    pids: Vec<(String, u32)>,
    changes: Changes,
}

/// Why this machine cannot run a node, if it cannot: tests skip with this message.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the node needs root (network namespaces, iptables, cgroups)".into());
    }
    let missing: Vec<&str> = HOST_PROGRAMS
        .iter()
        .copied()
        .filter(|p| host::run("sh", &["-c", &format!("command -v {p}")]).is_err())
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "missing {} (Debian: apt-get install containerd runc containernetworking-plugins iptables buildah)",
            missing.join(", ")
        ));
    }
    if !Path::new("/usr/lib/cni/bridge").exists() {
        return Some("missing the CNI bridge plugin (Debian: containernetworking-plugins)".into());
    }
    None
}

/// The least free space the node starts with: its kubelet evicts every pod below
/// [`EVICTION_FREE`], and images, logs and the tests' own files need room above that.
const NODE_FREE: u64 = 4 << 30;

/// Fails naming the problem when the disk holding `dir` is too full for a node: on a full disk
/// the kubelet evicts the operator's pods, and a test would only see no pod holding the Lease.
fn room_for_a_node(dir: &Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let free = host::free_bytes(existing)?;
    if free < NODE_FREE {
        return Err(format!(
            "only {:.1} GiB free on the disk of {}: a node needs {} GiB (its kubelet evicts every \
             pod below {EVICTION_FREE}); free some space and run again",
            free as f64 / f64::from(1 << 30),
            existing.display(),
            NODE_FREE >> 30
        ));
    }
    Ok(())
}

fn node_name() -> String {
    host::run("hostname", &[])
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "reserve-node".into())
}

impl Node {
    /// Starts everything in `dir` and imports `images` (OCI archives). With
    /// [`Lifetime::Detached`] it outlives this process until [`Node::down`].
    pub fn up(dir: &Path, lifetime: Lifetime, images: &[PathBuf]) -> Result<Node, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        room_for_a_node(dir)?;
        let began = Instant::now();
        let bin = tools::node_bin_dir()?.to_path_buf();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = node_name();
        let mut changes = Changes::record(format!("reserve-node {}", dir.display()));
        let mut state = State {
            pids: Vec::new(),
            changes: changes.clone(),
        };
        let save = |state: &State| {
            std::fs::write(
                dir.join("node.json"),
                serde_json::to_vec(state).expect("state serialises"),
            )
            .map_err(|e| format!("node state: {e}"))
        };
        save(&state)?;

        let cp = ControlPlane::start(Options {
            dir: dir.join("control-plane"),
            lifetime,
            audit: AuditMode::Batch,
            node: Some(name.clone()),
            profiling: false,
        })?;
        // The kubelet's identity gets what kubelets get; the Node authorizer is not needed.
        let out = cp.kubectl(&[
            "create",
            "clusterrolebinding",
            "reserve-node",
            "--clusterrole=system:node",
            "--group=system:nodes",
        ]);
        if !out.status.success() {
            return Err(format!("binding the node's identity: {}", text(&out)));
        }

        // containerd, with its own config, root, state and socket.
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(&config, containerd_config(dir, &socket)).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("cni/net.d")).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("cni/net.d/10-reserve.conflist"), cni_config(dir))
            .map_err(|e| e.to_string())?;
        let containerd = Proc::spawn(
            Command::new("containerd").arg("--config").arg(&config),
            &dir.join("containerd.log"),
            lifetime,
        )
        .map_err(|e| format!("starting containerd: {e}"))?;
        state.pids.push(("containerd".into(), containerd.pid()));
        save(&state)?;
        wait_for(Duration::from_secs(30), "containerd's socket", || {
            socket.exists()
        })?;

        // Images: the sandbox's, then the ones asked for.
        let pause = host::run(
            &tools::repo_root()
                .join("hack/image.sh")
                .display()
                .to_string(),
            &["pause", &dir.display().to_string()],
        )
        .map_err(|e| format!("building the pause image: {e}"))?;
        for archive in std::iter::once(PathBuf::from(pause.trim())).chain(images.iter().cloned()) {
            import(&socket, &archive)?;
        }

        // The network: guard rules first, then the bridge (its address is the node's IP, where
        // the API server reaches the kubelet), then the route to the API server.
        for (table, rule) in changes.guard_and_route(cp.port())? {
            changes.add_rule(&table, &rule, |c| {
                save(&State {
                    pids: state.pids.clone(),
                    changes: c.clone(),
                })
            })?;
        }
        state.changes = changes;
        save(&state)?;
        host::bridge()?;

        // The kubelet, then the controllers.
        let kubelet_dir = dir.join("kubelet");
        std::fs::create_dir_all(&kubelet_dir).map_err(|e| e.to_string())?;
        let token =
            std::fs::read_to_string(cp.dir().join(NODE_TOKEN)).map_err(|e| e.to_string())?;
        let kubeconfig = cp.kubeconfig_with_token(token.trim(), "default");
        let kubelet_kubeconfig = dir.join("kubelet.kubeconfig");
        std::fs::copy(&kubeconfig, &kubelet_kubeconfig).map_err(|e| e.to_string())?;
        let kubelet_config = dir.join("kubelet.yaml");
        std::fs::write(
            &kubelet_config,
            kubelet_config_yaml(cp.dir(), &socket, free_port(), free_port()),
        )
        .map_err(|e| e.to_string())?;
        let kubelet = Proc::spawn(
            Command::new(bin.join("kubelet"))
                .arg(format!("--config={}", kubelet_config.display()))
                .arg(format!("--kubeconfig={}", kubelet_kubeconfig.display()))
                .arg(format!("--root-dir={}", kubelet_dir.display()))
                .arg(format!("--hostname-override={name}"))
                .arg(format!("--node-ip={}", host::NODE_IP))
                .arg("--v=1"),
            &dir.join("kubelet.log"),
            lifetime,
        )
        .map_err(|e| format!("starting the kubelet: {e}"))?;
        state.pids.push(("kubelet".into(), kubelet.pid()));
        save(&state)?;
        let admin = cp.kubeconfig().display().to_string();
        let ca = cp.dir().join(crate::certs::CA_CERT).display().to_string();
        let controllers = Proc::spawn(
            Command::new(bin.join("kube-controller-manager")).args([
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                format!("--root-ca-file={ca}"),
                format!(
                    "--service-account-private-key-file={}",
                    cp.dir().join(crate::certs::SERVICE_ACCOUNT_KEY).display()
                ),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                "--v=1".into(),
            ]),
            &dir.join("kube-controller-manager.log"),
            lifetime,
        )
        .map_err(|e| format!("starting kube-controller-manager: {e}"))?;
        state
            .pids
            .push(("kube-controller-manager".into(), controllers.pid()));
        let scheduler = Proc::spawn(
            Command::new(bin.join("kube-scheduler")).args([
                format!("--kubeconfig={admin}"),
                format!("--authentication-kubeconfig={admin}"),
                format!("--authorization-kubeconfig={admin}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
            ]),
            &dir.join("kube-scheduler.log"),
            lifetime,
        )
        .map_err(|e| format!("starting kube-scheduler: {e}"))?;
        state.pids.push(("kube-scheduler".into(), scheduler.pid()));
        save(&state)?;
        // The Procs stop by pid at `down`, recorded in the state; forget the handles here.
        for proc in [containerd, kubelet, controllers, scheduler] {
            std::mem::forget(proc);
        }

        let node = Node {
            cp,
            dir: dir.to_path_buf(),
            name,
            socket,
        };
        node.wait_ready()?;
        eprintln!(
            "testkit: node {} up in {:.1}s",
            node.name,
            began.elapsed().as_secs_f64()
        );
        Ok(node)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.cp.kubectl(&[
                "get",
                "node",
                &self.name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
            ]);
            let answer = String::from_utf8_lossy(&out.stdout).into_owned();
            let sa = self.cp.kubectl(&[
                "get",
                "serviceaccount",
                "default",
                "-n",
                "default",
                "-o",
                "name",
            ]);
            if answer.starts_with("True") && !answer.contains("not-ready") && sa.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the node is not ready after 120 s: {answer}\nkubelet:\n{}",
                    crate::process::tail(&self.dir.join("kubelet.log"), 30)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What a failing test should show about the node: its conditions (disk, memory or PID
    /// pressure evicts pods), every pod with its phase and reason, and the kubelet's last lines.
    pub fn describe(&self) -> String {
        let get = |args: &[&str]| {
            let out = self.cp.kubectl(args);
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        format!(
            "node conditions:\n{}\npods:\n{}\nkubelet:\n{}",
            get(&[
                "get",
                "node",
                &self.name,
                "-o",
                "jsonpath={range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{\"\\n\"}{end}",
            ]),
            get(&[
                "get",
                "pods",
                "-A",
                "-o",
                "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,PHASE:.status.phase,REASON:.status.reason,MESSAGE:.status.message",
            ]),
            crate::process::tail(&self.dir.join("kubelet.log"), 20)
        )
    }

    /// Imports an OCI archive into the node's containerd.
    pub fn import(&self, archive: &Path) -> Result<(), String> {
        import(&self.socket, archive)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Processes of the node's containers (runc's children), as seen from the host: the
    /// command line of each, by pid.
    pub fn container_processes(&self, program: &str) -> Vec<u32> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    c.split(|b| *b == 0)
                        .next()
                        .is_some_and(|a| a.ends_with(program.as_bytes()))
                })
            })
            .filter(|pid| {
                // A container's process lives in a network namespace of its pod, not the host's.
                let own = std::fs::read_link("/proc/self/ns/net").ok();
                std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != own
            })
            .collect()
    }

    /// Stops everything the node started and undoes what it changed on the host. Works from
    /// the state in `dir` alone, so it also cleans up after a process that died.
    pub fn down(dir: &Path) -> Result<(), String> {
        let Ok(raw) = std::fs::read(dir.join("node.json")) else {
            let _ = std::fs::remove_dir_all(dir);
            return Ok(());
        };
        let state: State = serde_json::from_slice(&raw).map_err(|e| format!("node state: {e}"))?;
        let marker = dir.display().to_string();
        let pid_of = |name: &str| state.pids.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
        let stop = |name: &str, program: &str| {
            if let Some(mut proc) = pid_of(name).and_then(|pid| Proc::find(pid, program, &marker)) {
                proc.stop(Duration::from_secs(10));
            }
        };
        // No new pods, then the pods through the API (the kubelet stops their containers and
        // the CNI plugin removes their network), then the processes.
        stop("kube-controller-manager", "kube-controller-manager");
        stop("kube-scheduler", "kube-scheduler");
        if let Some(cp) = ControlPlane::attach(&dir.join("control-plane")) {
            let _ = cp.kubectl(&[
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=5",
                "--timeout=20s",
                "--wait=true",
            ]);
        }
        stop("kubelet", "kubelet");
        if let Some(cp) = ControlPlane::attach(&dir.join("control-plane")) {
            cp.stop();
        }
        stop("containerd", "containerd");
        // containerd's shims (and anything else started for the node) by pid.
        for pid in host::processes_with(&marker) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        // What is left in the pods' cgroups (a sandbox whose shim is gone) goes too.
        for cgroup in host::kubepods_cgroups() {
            host::kill_cgroup(&cgroup);
        }
        // SIGKILL is delivered at once but a process leaves its cgroup only once it has exited.
        let gone = wait_for(
            Duration::from_secs(60),
            "the killed processes to exit",
            || {
                host::processes_with(&marker).is_empty()
                    && host::kubepods_cgroups()
                        .iter()
                        .all(|c| host::cgroup_empty(c))
            },
        );
        if let Err(error) = gone {
            eprintln!("node teardown: {error}");
        }
        for mount in host::mounts_under(dir) {
            host::unmount(&mount);
        }
        for cgroup in host::kubepods_cgroups() {
            host::remove_cgroup(&cgroup);
        }
        host::undo(&state.changes);
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let left = host::leftovers(dir, &state.changes);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left behind: {left:?}"))
        }
    }
}

fn wait_for(timeout: Duration, what: &str, done: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Imports an OCI archive, under the names the kubelet looks for: `reserve-operator:0.2.0` is
/// `docker.io/library/reserve-operator:0.2.0` to it.
fn import(socket: &Path, archive: &Path) -> Result<(), String> {
    let socket = socket.display().to_string();
    let ctr = |args: &[&str]| {
        let mut all = vec!["--address", socket.as_str(), "-n", "k8s.io", "images"];
        all.extend_from_slice(args);
        host::run("ctr", &all)
    };
    let before = ctr(&["ls", "-q"])?;
    ctr(&["import", "--all-platforms", &archive.display().to_string()])
        .map_err(|e| format!("importing {}: {e}", archive.display()))?;
    for name in ctr(&["ls", "-q"])?
        .lines()
        .filter(|n| !before.lines().any(|b| b == *n))
    {
        if name.starts_with("sha256:") {
            continue;
        }
        let normalized = match name.split_once('/') {
            None => format!("docker.io/library/{name}"),
            Some((domain, _))
                if !domain.contains('.') && !domain.contains(':') && domain != "localhost" =>
            {
                format!("docker.io/{name}")
            }
            Some(_) => continue,
        };
        ctr(&["tag", "--force", name, &normalized])?;
    }
    Ok(())
}
