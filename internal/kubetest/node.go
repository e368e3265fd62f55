package kubetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RealNodeEnv turns the real node on: AGENTBOT_REAL_NODE=1 (scripts/test.sh
// sets it) makes a Suite with RealNode start one, and makes anything it
// needs that is missing a failure; otherwise its tests skip.
const RealNodeEnv = "AGENTBOT_REAL_NODE"

// BridgeIP is the node's address: the host's side of the pods' bridge. A
// test server a pod must reach listens here.
const BridgeIP = "10.88.0.1"

const (
	bridgeName = "agentbot0"
	podSubnet  = "10.88.0.0/16"
	// RuntimeClassGVisor is the RuntimeClass the real node offers for
	// gVisor, as manifests/overlays/gvisor expects.
	RuntimeClassGVisor = "gvisor"
	// RunnerImage is the runner image built from the Dockerfile, as the
	// real node knows it (pods use it with imagePullPolicy Never).
	RunnerImage = "localhost/agentbot-runner:kubetest"
)

// nodeBinaries are the node's programs from hack/testenv/build.sh, and
// hostBinaries those from Debian packages (scripts/test.sh installs them).
var (
	nodeBinaries = []string{"kubelet", "kube-scheduler", "runsc", "containerd-shim-runsc-v1"}
	hostBinaries = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip6tables", "ip", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"}
)

// Images are the images hack/images/build.sh built, as the node knows them
// once imported: a pod uses them with imagePullPolicy Never.
type Images struct {
	Runner, Bot, Pause string
	dir                string
}

// loadImages reads what hack/images/build.sh wrote to
// $AGENTBOT_CACHE/images/current (or $AGENTBOT_IMAGES_DIR).
func loadImages() (Images, error) {
	dir := os.Getenv("AGENTBOT_IMAGES_DIR")
	if dir == "" {
		cache := os.Getenv("AGENTBOT_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "agentbot")
		}
		dir = filepath.Join(cache, "images", "current")
	}
	f, err := os.Open(filepath.Join(dir, "images.env"))
	if err != nil {
		return Images{}, &MissingBinariesError{Dir: dir, Missing: []string{"images (build them with hack/images/build.sh)"}}
	}
	defer f.Close()
	im := Images{dir: dir}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "AGENTBOT_RUNNER_IMAGE":
			im.Runner = v
		case "AGENTBOT_BOT_IMAGE":
			im.Bot = v
		case "AGENTBOT_PAUSE_IMAGE":
			im.Pause = v
		}
	}
	if im.Runner == "" || im.Pause == "" {
		return Images{}, fmt.Errorf("kubetest: %s/images.env names no runner or pause image", dir)
	}
	return im, nil
}

// checkNodePrerequisites reports what the real node lacks.
func checkNodePrerequisites(bin string) error {
	var missing []string
	for _, b := range nodeBinaries {
		if fi, err := os.Stat(filepath.Join(bin, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	for _, b := range hostBinaries {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return &MissingBinariesError{Dir: bin + " and PATH", Missing: missing}
	}
	if os.Geteuid() != 0 {
		return errors.New("kubetest: the real node needs root")
	}
	return nil
}

// node is the real node: containerd with runc and gVisor, the CNI bridge,
// the kubelet and kube-scheduler.
type node struct {
	dir   string
	sock  string
	host  *hostState
	lock  *os.File
	procs []*process
	// before and after are the host as the node found and left it.
	before, after HostSnapshot
	afterErr      error
	signal        chan os.Signal
	done          chan struct{}
}

// lockHost takes the machine-wide lock of the real node, waiting for
// another test binary's node to stop.
func lockHost(ctx context.Context) (*os.File, error) {
	f, err := os.OpenFile(hostLockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("kubetest: lock %s: %w", hostLockFile, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("kubetest: another real node holds %s: %w", hostLockFile, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// startNode records the host, then brings up the bridge, containerd, the
// images, the kubelet and the scheduler, and waits for the node to be
// Ready. e.Stop (or a SIGINT/SIGTERM) undoes it all.
func (e *Env) startNode(ctx context.Context, bin, kubeconfig string, kubeletKubeconfig []byte, pki *kubeletPKI) error {
	n := e.node
	dir := filepath.Join(e.dir, "node")
	n.dir, n.sock = dir, filepath.Join(dir, "containerd", "containerd.sock")
	host, err := recordHost(e.dir, n.sock, bridgeName)
	if err != nil {
		return err
	}
	n.host = host
	if n.before, err = SnapshotHost(); err != nil {
		return err
	}
	n.watchSignals(e)
	if err := setUpBridge(); err != nil {
		return err
	}
	if err := e.startContainerd(ctx, bin); err != nil {
		return err
	}
	for _, archive := range []string{"pause.tar", "runner.tar"} {
		if err := n.importImage(ctx, filepath.Join(e.Images.dir, archive)); err != nil {
			return err
		}
	}
	// A fixed name for the content-addressed one, so a test overlay can
	// name it.
	if err := n.ctr(ctx, "images", "tag", "--force", e.Images.Runner, RunnerImage); err != nil {
		return err
	}
	if err := e.startKubelet(ctx, bin, kubeletKubeconfig, pki); err != nil {
		return err
	}
	sched, err := startProcess(ctx, dir, "kube-scheduler", filepath.Join(bin, "kube-scheduler"), nil,
		"--kubeconfig="+kubeconfig, "--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, sched)
	if err := e.waitNodeReady(ctx); err != nil {
		return err
	}
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: RuntimeClassGVisor}, Handler: "runsc"}
	if _, err := e.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubetest: create RuntimeClass %s: %w", RuntimeClassGVisor, err)
	}
	return nil
}

// watchSignals stops the environment, restoring the host, when the test
// binary is interrupted; a timeout's panic runs no cleanup, and the next
// start sweeps instead.
func (n *node) watchSignals(e *Env) {
	n.signal = make(chan os.Signal, 1)
	n.done = make(chan struct{})
	signal.Notify(n.signal, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case sig := <-n.signal:
			fmt.Fprintf(os.Stderr, "kubetest: %v: stopping the real node and restoring the host\n", sig)
			if err := e.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
			}
			os.Exit(130)
		case <-n.done:
		}
	}()
}

func setUpBridge() error {
	steps := [][]string{
		{"ip", "link", "add", "name", bridgeName, "type", "bridge"},
		{"ip", "addr", "add", BridgeIP + "/16", "dev", bridgeName},
		{"ip", "link", "set", bridgeName, "up"},
		// Pods reach each other and the host's bridge address, nothing
		// beyond: no forwarding in or out of the bridge.
		{"iptables", "-I", "FORWARD", "1", "-i", bridgeName, "!", "-o", bridgeName, "-j", "DROP"},
		{"iptables", "-I", "FORWARD", "1", "-o", bridgeName, "!", "-i", bridgeName, "-j", "DROP"},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("kubetest: %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}

func (e *Env) startContainerd(ctx context.Context, bin string) error {
	n := e.node
	cd := filepath.Join(n.dir, "containerd")
	for _, d := range []string{cd, filepath.Join(n.dir, "cni"), filepath.Join(n.dir, "runsc")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
	}
	files := map[string]string{
		filepath.Join(cd, "config.toml"):                containerdConfig(n.dir, n.sock, e.Images.Pause),
		filepath.Join(cd, "runsc.toml"):                 fmt.Sprintf("binary_name = %q\nroot = %q\n", filepath.Join(bin, "runsc"), filepath.Join(n.dir, "runsc")),
		filepath.Join(n.dir, "cni", "10-pods.conflist"): cniConfig(n.dir),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return fmt.Errorf("kubetest: %w", err)
		}
	}
	// containerd finds containerd-shim-runsc-v1 on its PATH.
	p, err := startProcess(ctx, n.dir, "containerd", "containerd", []string{"PATH=" + bin + ":" + os.Getenv("PATH")},
		"--config", filepath.Join(cd, "config.toml"))
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	deadline := time.Now().Add(time.Minute)
	for {
		if err := n.ctr(ctx, "version"); err == nil {
			return nil
		}
		if exited, err := p.exited(); exited || time.Now().After(deadline) {
			return fmt.Errorf("kubetest: containerd did not start (%v):\n%s", err, tail(p.output(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *node) ctr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubetest: ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (n *node) importImage(ctx context.Context, archive string) error {
	real, err := filepath.EvalSymlinks(archive)
	if err != nil {
		return &MissingBinariesError{Dir: filepath.Dir(archive), Missing: []string{filepath.Base(archive) + " (build it with hack/images/build.sh)"}}
	}
	return n.ctr(ctx, "images", "import", real)
}

func (e *Env) startKubelet(ctx context.Context, bin string, kubeconfig []byte, pki *kubeletPKI) error {
	n := e.node
	root := filepath.Join(n.dir, "kubelet")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	port, err := freePort(BridgeIP)
	if err != nil {
		return err
	}
	kc := filepath.Join(n.dir, "kubelet.kubeconfig")
	config := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	if err := os.WriteFile(config, []byte(kubeletConfig(n.dir, n.sock, pki.CAFile, port)), 0o600); err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	p, err := startProcess(ctx, n.dir, "kubelet", filepath.Join(bin, "kubelet"), nil,
		"--config="+config,
		"--kubeconfig="+kc,
		"--root-dir="+root,
		"--cert-dir="+filepath.Join(root, "pki"),
		"--hostname-override="+NodeName,
		"--node-ip="+BridgeIP,
		"--v=2",
	)
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return nil
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("kubetest: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *Env) waitNodeReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		node, err := e.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil && nodeReady(node) {
			return e.untaintNode(ctx, node)
		}
		for _, p := range e.node.procs {
			if exited, perr := p.exited(); exited {
				return fmt.Errorf("kubetest: %s exited (%v):\n%s", p.name, perr, tail(p.output(), 40))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubetest: node %s not Ready (%v); kubelet:\n%s", NodeName, err, e.nodeLog("kubelet", 40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// untaintNode removes the not-ready taint the kubelet registers its node
// with, as kube-controller-manager's node lifecycle controller does once the
// node is Ready (that controller does not run here: it would also evict
// pods on a slow heartbeat).
func (e *Env) untaintNode(ctx context.Context, node *corev1.Node) error {
	var keep []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			keep = append(keep, t)
		}
	}
	if len(keep) == len(node.Spec.Taints) {
		return nil
	}
	node.Spec.Taints = keep
	if _, err := e.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubetest: untaint node %s: %w", NodeName, err)
	}
	return nil
}

func (e *Env) nodeLog(name string, lines int) string {
	for _, p := range e.node.procs {
		if p.name == name {
			return tail(p.output(), lines)
		}
	}
	return ""
}

// stopProcesses stops the kubelet, the scheduler and containerd (the
// containers go with the host's restore).
func (n *node) stopProcesses() []error {
	var errs []error
	for i := len(n.procs) - 1; i >= 0; i-- {
		if err := n.procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// stop stops what is left of the node, restores the host and releases the
// lock.
func (n *node) stop() error {
	errs := n.stopProcesses()
	if n.host != nil {
		if err := n.host.restore(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.host != nil {
		n.after, n.afterErr = SnapshotHost()
	}
	if n.done != nil {
		signal.Stop(n.signal)
		close(n.done)
	}
	if n.lock != nil {
		_ = syscall.Flock(int(n.lock.Fd()), syscall.LOCK_UN)
		n.lock.Close()
	}
	return errors.Join(errs...)
}

// Kubeconfig is the path of an administrator kubeconfig for the
// environment, for a process (agentbot serve) that talks to it.
func (e *Env) Kubeconfig() string { return filepath.Join(e.dir, "kubeconfig") }

// KillContainer sends SIGKILL to a container of the real node, as the
// kernel's OOM killer or a crash would end it; containerID is the pod
// status's "containerd://..." ID.
func (e *Env) KillContainer(ctx context.Context, containerID string) error {
	if e.node == nil {
		return errors.New("kubetest: KillContainer needs the real node")
	}
	id := strings.TrimPrefix(containerID, "containerd://")
	return e.node.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", id)
}

// HostSnapshots are the host's sysctls and firewall rules as the real node
// found them and, once Stop returned, as it left them.
func (e *Env) HostSnapshots() (before, after HostSnapshot, err error) {
	if e.node == nil {
		return before, after, errors.New("kubetest: no real node")
	}
	return e.node.before, e.node.after, e.node.afterErr
}
