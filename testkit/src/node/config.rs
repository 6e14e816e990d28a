//! The configuration files of the node's containerd, CNI bridge and kubelet.

use std::path::Path;

use super::host::{self, BRIDGE, POD_CIDR};

/// The sandbox image of every pod (built from hack/node/pause.c).
pub const PAUSE_IMAGE: &str = "reserve.local/pause:1";

/// The kubelet evicts every pod below this much free disk.
pub(super) const EVICTION_FREE: &str = "1Gi";

pub(super) fn containerd_config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without it every sandbox fails ("can't get final child's PID from pipe"): the process may
  # not raise its own OOM score adjustment here.
  restrict_oom_score_adj = true
  # Network namespaces under the node's state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#,
        socket = socket.display()
    )
}

pub(super) fn cni_config(dir: &Path) -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "reserve",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{POD_CIDR}" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}],
        "dataDir": "{}/cni/ipam"
      }}
    }}
  ]
}}
"#,
        dir.display()
    )
}

pub(super) fn kubelet_config_yaml(cp_dir: &Path, socket: &Path, port: u16, healthz: u16) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 in hybrid mode, without systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
address: {node_ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: {ca}
authorization:
  mode: AlwaysAllow
failSwapOn: false
resolvConf: ""
makeIPTablesUtilChains: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "{eviction}"
  imagefs.available: "{eviction}"
"#,
        eviction = EVICTION_FREE,
        socket = socket.display(),
        ca = cp_dir.join(crate::certs::CA_CERT).display(),
        node_ip = host::NODE_IP,
    )
}
