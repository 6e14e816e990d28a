//! What the node changes on the host, and how it is undone: iptables rules (tagged), the CNI
//! bridge, sysctls, mounts, network namespaces and cgroups under the node's directory. Every
//! change is recorded before it is made, so teardown can undo exactly what was done, even after
//! a crash.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Deserialize, Serialize};

/// The pod network: pods live only in network namespaces the node created, behind this bridge.
pub const BRIDGE: &str = "reserve0";
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's address, which pods use to reach the API server.
pub const API_SERVICE_IP: &str = "10.96.0.1";
/// The bridge's address: the pods' gateway, and the node's IP (where the kubelet listens).
pub const NODE_IP: &str = "10.244.0.1";

/// Creates the pods' bridge with the node's address, before the CNI plugin would: the kubelet
/// needs the node's IP at start. Traffic that pods send to the API server's Service address is
/// sent to 127.0.0.1, which the bridge must allow (route_localnet).
pub fn bridge() -> Result<(), String> {
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &["addr", "add", &format!("{NODE_IP}/24"), "dev", BRIDGE],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    set_sysctl(&format!("net.ipv4.conf.{BRIDGE}.route_localnet"), "1")
}

/// What the host looked like before the node, and what the node added.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Changes {
    /// The tag in the comment of every iptables rule the node added.
    pub tag: String,
    pub ip_forward_before: String,
    /// KUBE-* chains that existed before the kubelet (left alone at teardown).
    pub kube_chains_before: Vec<(String, String)>,
    pub device_plugins_existed: bool,
    /// Rules added, as `iptables -t TABLE -A` arguments.
    pub rules: Vec<(String, Vec<String>)>,
}

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Bytes free (for an unprivileged user, as `df` counts them) on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64, String> {
    let out = run(
        "df",
        &["--output=avail", "-B1", &path.display().to_string()],
    )?;
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("df {}: no free space in {out:?}", path.display()))
}

pub fn sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn set_sysctl(key: &str, value: &str) -> Result<(), String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))
}

/// The interface of the default route (the uplink pod traffic must never leave by).
pub fn uplink() -> Result<String, String> {
    let routes = run("ip", &["-4", "route", "show", "default"])?;
    routes
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .map(str::to_owned)
        .ok_or_else(|| format!("no default route in {routes:?}"))
}

/// KUBE-* chains of the tables the kubelet touches.
pub fn kube_chains() -> Vec<(String, String)> {
    let mut chains = Vec::new();
    for table in ["filter", "nat", "mangle"] {
        let rules = run("iptables", &["-t", table, "-S"]).unwrap_or_default();
        for line in rules.lines() {
            if let Some(chain) = line.strip_prefix("-N ").filter(|c| c.starts_with("KUBE-")) {
                chains.push((table.to_owned(), chain.to_owned()));
            }
        }
    }
    chains
}

impl Changes {
    pub fn record(tag: String) -> Changes {
        Changes {
            tag,
            ip_forward_before: sysctl("net.ipv4.ip_forward"),
            kube_chains_before: kube_chains(),
            device_plugins_existed: Path::new(DEVICE_PLUGINS).exists(),
            rules: Vec::new(),
        }
    }

    /// The rules that keep pod traffic on this machine and let pods reach the API server:
    /// nothing forwarded from or to the pod range, nothing out of the uplink for the pod or
    /// service ranges, and 10.96.0.1:443 sent to the API server on 127.0.0.1.
    pub fn guard_and_route(&self, api_port: u16) -> Result<Vec<(String, Vec<String>)>, String> {
        let uplink = uplink()?;
        let api = format!("127.0.0.1:{api_port}");
        let rules: Vec<(&str, Vec<&str>)> = vec![
            ("filter", vec!["FORWARD", "-s", POD_CIDR, "-j", "DROP"]),
            ("filter", vec!["FORWARD", "-d", POD_CIDR, "-j", "DROP"]),
            (
                "filter",
                vec!["OUTPUT", "-o", &uplink, "-d", POD_CIDR, "-j", "DROP"],
            ),
            (
                "filter",
                vec!["OUTPUT", "-o", &uplink, "-d", SERVICE_CIDR, "-j", "DROP"],
            ),
            (
                "nat",
                vec![
                    "PREROUTING",
                    "-i",
                    BRIDGE,
                    "-d",
                    API_SERVICE_IP,
                    "-p",
                    "tcp",
                    "--dport",
                    "443",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &api,
                ],
            ),
        ];
        Ok(rules
            .into_iter()
            .map(|(table, mut rule)| {
                rule.extend(["-m", "comment", "--comment", &self.tag]);
                (
                    table.to_owned(),
                    rule.into_iter().map(str::to_owned).collect(),
                )
            })
            .collect())
    }

    /// Adds a rule (first in its chain), after recording it.
    pub fn add_rule(
        &mut self,
        table: &str,
        rule: &[String],
        save: impl Fn(&Changes) -> Result<(), String>,
    ) -> Result<(), String> {
        self.rules.push((table.to_owned(), rule.to_vec()));
        save(self)?;
        let mut args = vec!["-w", "-t", table, "-I"];
        args.extend(rule.iter().map(String::as_str));
        run("iptables", &args).map(drop)
    }
}

/// The kubelet's fixed device-plugin directory, created whatever its root directory.
pub const DEVICE_PLUGINS: &str = "/var/lib/kubelet/device-plugins";

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

pub fn unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 takes a valid NUL-terminated path and flags.
    unsafe {
        libc::umount2(c.as_ptr(), libc::MNT_DETACH);
    }
}

/// The `kubepods` cgroup trees of every cgroup v1 hierarchy (and of the unified one).
pub fn kubepods_cgroups() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let candidate = hierarchy.path().join("kubepods");
        if candidate.is_dir() {
            roots.push(candidate);
        }
    }
    let unified = Path::new("/sys/fs/cgroup/kubepods");
    if unified.is_dir() {
        roots.push(unified.to_path_buf());
    }
    roots
}

/// Kills every process left in a cgroup tree (containers whose shim is gone), by pid.
pub fn kill_cgroup(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
}

/// Removes a cgroup tree, leaves first.
/// Whether no process is left in `root` or any cgroup below it.
pub fn cgroup_empty(root: &Path) -> bool {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() {
            return false;
        }
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    true
}

pub fn remove_cgroup(root: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        dirs.push(dir);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Pids of processes whose command line mentions `marker` (the node's directory), other than
/// this one.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

/// Undoes every change: rules the node added (and the kubelet's KUBE-* chains, jump rules
/// first), the bridge, ip_forward, the device-plugin directory.
pub fn undo(changes: &Changes) {
    for table in ["filter", "nat", "mangle"] {
        let rules = run("iptables", &["-t", table, "-S"]).unwrap_or_default();
        for line in rules.lines().filter(|l| l.contains(&changes.tag)) {
            if let Some(rule) = line.strip_prefix("-A ") {
                let args = shell_words(rule);
                let mut delete = vec!["-w", "-t", table, "-D"];
                delete.extend(args.iter().map(String::as_str));
                let _ = run("iptables", &delete);
            }
        }
    }
    let new_chains: Vec<(String, String)> = kube_chains()
        .into_iter()
        .filter(|c| !changes.kube_chains_before.contains(c))
        .collect();
    for (table, chain) in &new_chains {
        let rules = run("iptables", &["-t", table, "-S"]).unwrap_or_default();
        for line in rules.lines().filter(|l| l.contains(&format!("-j {chain}"))) {
            if let Some(rule) = line.strip_prefix("-A ") {
                let args = shell_words(rule);
                let mut delete = vec!["-w", "-t", table.as_str(), "-D"];
                delete.extend(args.iter().map(String::as_str));
                let _ = run("iptables", &delete);
            }
        }
    }
    for (table, chain) in &new_chains {
        let _ = run("iptables", &["-w", "-t", table, "-F", chain]);
    }
    for (table, chain) in &new_chains {
        let _ = run("iptables", &["-w", "-t", table, "-X", chain]);
    }
    let _ = run("ip", &["link", "delete", BRIDGE]);
    if !changes.ip_forward_before.is_empty() {
        let _ = set_sysctl("net.ipv4.ip_forward", &changes.ip_forward_before);
    }
    if !changes.device_plugins_existed {
        let _ = std::fs::remove_dir_all(DEVICE_PLUGINS);
    }
}

/// What is still there that the node made: empty once teardown has done its work.
pub fn leftovers(dir: &Path, changes: &Changes) -> Vec<String> {
    let mut left = Vec::new();
    for pid in processes_with(&dir.display().to_string()) {
        left.push(format!("process {pid}"));
    }
    for mount in mounts_under(dir) {
        left.push(format!("mount {}", mount.display()));
    }
    for table in ["filter", "nat", "mangle"] {
        let rules = run("iptables", &["-t", table, "-S"]).unwrap_or_default();
        for line in rules.lines().filter(|l| l.contains(&changes.tag)) {
            left.push(format!("iptables -t {table} {line}"));
        }
    }
    for chain in kube_chains() {
        if !changes.kube_chains_before.contains(&chain) {
            left.push(format!("iptables chain {} {}", chain.0, chain.1));
        }
    }
    if Path::new(&format!("/sys/class/net/{BRIDGE}")).exists() {
        left.push(format!("bridge {BRIDGE}"));
    }
    for cgroup in kubepods_cgroups() {
        left.push(format!("cgroup {}", cgroup.display()));
    }
    if sysctl("net.ipv4.ip_forward") != changes.ip_forward_before {
        left.push("net.ipv4.ip_forward changed".into());
    }
    if !changes.device_plugins_existed && Path::new(DEVICE_PLUGINS).exists() {
        left.push(DEVICE_PLUGINS.into());
    }
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    left
}

/// Splits an `iptables -S` rule into arguments (quoted comments kept whole).
fn shell_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_split_into_arguments() {
        assert_eq!(
            shell_words(
                r#"FORWARD -s 10.244.0.0/24 -m comment --comment "reserve node x" -j DROP"#
            ),
            [
                "FORWARD",
                "-s",
                "10.244.0.0/24",
                "-m",
                "comment",
                "--comment",
                "reserve node x",
                "-j",
                "DROP"
            ]
        );
    }
}
