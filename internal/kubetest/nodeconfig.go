package kubetest

import (
	"fmt"
	"path/filepath"
)

// containerdConfig is containerd's configuration: everything under dir,
// runc with cgroupfs, runsc through the patched gVisor shim, and an OOM
// score the kernel lets us set without CAP_SYS_RESOURCE.
func containerdConfig(dir, sock, pause string) string {
	cd := filepath.Join(dir, "containerd")
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc]
      runtime_type = "io.containerd.runsc.v1"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runsc.options]
        TypeUrl = "io.containerd.runsc.v1.options"
        ConfigPath = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[8]q
`, filepath.Join(cd, "root"), filepath.Join(cd, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "opt"), pause, filepath.Join(cd, "runsc.toml"), filepath.Join(dir, "cni"))
}

// cniConfig is the pods' network: a bridge whose gateway is the host's
// BridgeIP, addresses from host-local, no masquerading and no default
// route (the pods reach the bridge's subnet and nothing else).
func cniConfig(dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "kubetest",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": %q,
      "ranges": [[{"subnet": %q, "gateway": %q}]]
    }
  }]
}
`, bridgeName, filepath.Join(dir, "cni-ipam"), podSubnet, BridgeIP)
}

// kubeletConfig: cgroup v1 with cgroupfs (as on this kind of machine), no
// swap check, x509 client certificates from the API server only, and no
// image garbage collection (the imported images cannot be pulled again).
func kubeletConfig(dir, sock, clientCA string, port int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzPort: 0
containerRuntimeEndpoint: unix://%[3]s
podLogsDir: %[4]q
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[5]q
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
serializeImagePulls: false
registerNode: true
`, BridgeIP, port, sock, filepath.Join(dir, "pod-logs"), clientCA)
}
