// Package kubetest runs a real, small Kubernetes control plane for tests:
// etcd and kube-apiserver (through controller-runtime's envtest), the
// garbage collector of kube-controller-manager, the agent-sandbox controller
// with its extensions, and either a stand-in kubelet that marks pods Running
// and Ready with a pod IP (fast, for most tests), or a real node (node.go):
// containerd with runc and gVisor, a CNI bridge, the kubelet and
// kube-scheduler, running the images hack/images/build.sh built from the
// Dockerfile. The real node changes the host; host.go records and restores
// what it touches.
//
// The binaries come from hack/testenv/build.sh, which builds them from the Go
// module proxy into $AGENTBOT_TESTENV_DIR/bin (default
// ~/.cache/agentbot/testenv/bin). Tests skip with the reason when they are
// missing, unless AGENTBOT_KUBE_TESTS=1, which turns that into a failure (CI
// sets it after building them).
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	sandboxclient "sigs.k8s.io/agent-sandbox/clients/k8s/extensions/clientset/versioned"
)

// Binaries the environment needs, in bin/ of the test environment directory.
var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "agent-sandbox-controller"}

// RequireEnv is the variable that makes missing binaries a failure.
const RequireEnv = "AGENTBOT_KUBE_TESTS"

// BinDir is where hack/testenv/build.sh puts the binaries.
func BinDir() string {
	dir := os.Getenv("AGENTBOT_TESTENV_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		dir = filepath.Join(home, ".cache", "agentbot", "testenv")
	}
	return filepath.Join(dir, "bin")
}

// MissingBinariesError says which test binaries are not built.
type MissingBinariesError struct {
	Dir     string
	Missing []string
}

func (e *MissingBinariesError) Error() string {
	return fmt.Sprintf("kubetest: %s missing in %s (build them with hack/testenv/build.sh)", strings.Join(e.Missing, ", "), e.Dir)
}

// findBinaries returns bin dir or a MissingBinariesError.
func findBinaries() (string, error) {
	dir := BinDir()
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", &MissingBinariesError{Dir: dir, Missing: missing}
	}
	return dir, nil
}

// Env is a running control plane.
type Env struct {
	// Config is an administrator (system:masters) client configuration.
	Config *rest.Config
	// Client, Sandbox and Dynamic are clients with Config.
	Client  kubernetes.Interface
	Sandbox sandboxclient.Interface
	Dynamic dynamic.Interface
	// Kubelet stands in for the kubelet of every node; nil with a real node.
	Kubelet *Kubelet
	// Images are the images the real node has imported.
	Images Images

	dir      string
	testEnv  *envtest.Environment
	procs    []*process
	node     *node
	stopOnce sync.Once
	stopErr  error
}

// Options choose what Start runs besides the control plane.
type Options struct {
	// RealNode runs a real node instead of the stand-in kubelet.
	RealNode bool
}

// Start brings the control plane up with the stand-in kubelet. It takes
// some seconds; share one Env among a package's tests with Suite.
func Start(ctx context.Context) (*Env, error) { return StartWith(ctx, Options{}) }

// StartWith brings the control plane up as o says.
func StartWith(ctx context.Context, o Options) (_ *Env, err error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	var images Images
	if o.RealNode {
		if err := checkNodePrerequisites(bin); err != nil {
			return nil, err
		}
		if images, err = loadImages(); err != nil {
			return nil, err
		}
	}
	crds, err := loadCRDs(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "agentbot-kubetest-")
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	e := &Env{dir: dir, Images: images}
	defer func() {
		if err != nil {
			if serr := e.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	var pki *kubeletPKI
	if o.RealNode {
		e.node = &node{}
		if e.node.lock, err = lockHost(ctx); err != nil {
			return nil, err
		}
		if pki, err = newKubeletPKI(filepath.Join(dir, "pki")); err != nil {
			return nil, err
		}
	}

	apiLog, err := os.Create(filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	defer apiLog.Close()
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	defer etcdLog.Close()

	existing := false
	te := &envtest.Environment{
		BinaryAssetsDirectory:    bin,
		CRDs:                     crds,
		UseExistingCluster:       &existing,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := te.ControlPlane.GetAPIServer()
	api.Out, api.Err = apiLog, apiLog
	// On 127.0.0.1 the default endpoint reconciler cannot publish the
	// kubernetes Service's endpoints and keeps complaining.
	api.Configure().Set("endpoint-reconciler-type", "none")
	if o.RealNode {
		// The kubelet authorizes itself as its node; exec goes to the
		// node's InternalIP (its name resolves nowhere) with a client
		// certificate the kubelet trusts.
		api.Configure().Set("authorization-mode", "Node,RBAC")
		api.Configure().Set("kubelet-preferred-address-types", "InternalIP")
		api.Configure().Set("kubelet-client-certificate", pki.ClientCertFile)
		api.Configure().Set("kubelet-client-key", pki.ClientKeyFile)
	}
	te.ControlPlane.Etcd = &envtest.Etcd{Out: etcdLog, Err: etcdLog}
	e.testEnv = te
	cfg, err := te.Start()
	if err != nil {
		return nil, fmt.Errorf("kubetest: start etcd and kube-apiserver (logs in %s): %w", dir, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	e.Config = cfg

	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, te.KubeConfig, 0o600); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if e.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if e.Sandbox, err = sandboxclient.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	if e.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}

	ctrl, err := e.startControllers(ctx, bin, kubeconfig)
	if err != nil {
		return nil, err
	}

	if o.RealNode {
		if err := e.startRealNode(ctx, bin, kubeconfig, pki); err != nil {
			return nil, err
		}
	} else {
		e.Kubelet = newKubelet(e.Client)
		if err := e.Kubelet.start(ctx); err != nil {
			return nil, err
		}
	}

	if err := e.waitControllers(ctx, ctrl); err != nil {
		return nil, err
	}
	return e, nil
}

// startControllers starts kube-controller-manager's garbage collector and
// the agent-sandbox controller, and returns the latter.
func (e *Env) startControllers(ctx context.Context, bin, kubeconfig string) (*process, error) {
	kcm, err := startProcess(ctx, e.dir, "kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), nil,
		"--kubeconfig="+kubeconfig,
		"--controllers=garbagecollector",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
	)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, kcm)

	ctrl, err := startProcess(ctx, e.dir, "agent-sandbox-controller", filepath.Join(bin, "agent-sandbox-controller"),
		[]string{"KUBECONFIG=" + kubeconfig},
		"--extensions",
		"--leader-elect=false",
		"--enable-webhook=false",
		"--metrics-bind-address=127.0.0.1:0",
		"--health-probe-bind-address=127.0.0.1:0",
		// Warm pools in tests are tiny; no reason to wait between refills.
		"--sandbox-warm-pool-replenish-delay=0s",
	)
	if err != nil {
		return nil, err
	}
	e.procs = append(e.procs, ctrl)

	return ctrl, nil
}

// startRealNode gives the real node its credentials and starts it.
func (e *Env) startRealNode(ctx context.Context, bin, kubeconfig string, pki *kubeletPKI) error {
	user, err := e.testEnv.ControlPlane.AddUser(envtest.User{Name: "system:node:" + NodeName, Groups: []string{"system:nodes"}}, nil)
	if err != nil {
		return fmt.Errorf("kubetest: node credentials: %w", err)
	}
	nodeKubeconfig, err := user.KubeConfig()
	if err != nil {
		return fmt.Errorf("kubetest: node kubeconfig: %w", err)
	}
	return e.startNode(ctx, bin, kubeconfig, nodeKubeconfig, pki)
}

// waitControllers waits until the agent-sandbox controller has started the
// workers of its claim, sandbox and warm pool controllers, and the garbage
// collector has synced, so the first test does not measure start-up.
func (e *Env) waitControllers(ctx context.Context, ctrl *process) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	want := []string{`"controller":"sandboxclaim"`, `"controller":"sandbox"`, `"controller":"sandboxwarmpool"`}
	for {
		log := ctrl.output()
		ok := true
		for _, w := range want {
			if !containsLine(log, "Starting workers", w) {
				ok = false
			}
		}
		if ok {
			return nil
		}
		if exited, err := ctrl.exited(); exited {
			return fmt.Errorf("kubetest: agent-sandbox-controller exited (%v):\n%s", err, tail(log, 40))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubetest: agent-sandbox-controller did not start its controllers:\n%s", tail(log, 40))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops everything and removes the environment's files.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		var errs []error
		if e.Kubelet != nil {
			e.Kubelet.stop()
		}
		if e.node != nil {
			// The kubelet's watches would hold up the API server's exit.
			errs = append(errs, e.node.stopProcesses()...)
		}
		for i := len(e.procs) - 1; i >= 0; i-- {
			if err := e.procs[i].stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if e.testEnv != nil {
			if err := e.testEnv.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("kubetest: stop control plane: %w", err))
			}
		}
		// The node last: it restores the host, which removes e.dir too.
		if e.node != nil {
			if err := e.node.stop(); err != nil {
				errs = append(errs, err)
			}
		}
		if e.dir != "" {
			if err := os.RemoveAll(e.dir); err != nil {
				errs = append(errs, err)
			}
		}
		e.stopErr = errors.Join(errs...)
	})
	return e.stopErr
}

// Logs returns the last lines of every component's log, for a failing test.
func (e *Env) Logs() string {
	var b strings.Builder
	procs := e.procs
	if e.node != nil {
		procs = append(append([]*process{}, procs...), e.node.procs...)
	}
	for _, p := range procs {
		fmt.Fprintf(&b, "--- %s (last 60 lines)\n%s\n", p.name, tail(p.output(), 60))
	}
	if api, err := os.ReadFile(filepath.Join(e.dir, "kube-apiserver.log")); err == nil {
		fmt.Fprintf(&b, "--- kube-apiserver (last 30 lines)\n%s\n", tail(string(api), 30))
	}
	return b.String()
}

// Namespace creates a fresh namespace for t and deletes it when t ends;
// when t fails, the components' logs are added to its output.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	name := "t-" + strings.ToLower(rand.String(8))
	ctx := context.Background()
	_, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane logs:\n%s", e.Logs())
		}
		// No namespace controller runs here, so the namespace would stay
		// Terminating; what matters is that tests do not see each other's
		// objects, which distinct names already ensure.
		err := e.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// Suite shares one Env among the tests of a package: the first test that
// asks starts it, TestMain stops it.
type Suite struct {
	// RealNode makes the suite's environment a real node; its tests skip
	// unless AGENTBOT_REAL_NODE=1.
	RealNode bool

	once sync.Once
	env  *Env
	err  error
}

// Env returns the shared environment, starting it on first use. It skips t
// when the binaries are missing, or fails t if AGENTBOT_KUBE_TESTS=1 or the
// environment did not start.
func (s *Suite) Env(t testing.TB) *Env {
	t.Helper()
	if s.RealNode && os.Getenv(RealNodeEnv) != "1" {
		t.Skipf("skipping: a real node runs only with %s=1 (it needs root and changes the host while it runs)", RealNodeEnv)
	}
	s.once.Do(func() {
		s.env, s.err = StartWith(context.Background(), Options{RealNode: s.RealNode})
	})
	if s.err != nil {
		var missing *MissingBinariesError
		if errors.As(s.err, &missing) && os.Getenv(RequireEnv) != "1" && !s.RealNode {
			t.Skipf("skipping: %v (set %s=1 to make this a failure)", s.err, RequireEnv)
		}
		t.Fatalf("kubernetes test environment: %v", s.err)
	}
	return s.env
}

// Stop stops the shared environment if it was started.
func (s *Suite) Stop() error {
	if s.env == nil {
		return nil
	}
	return s.env.Stop()
}

// Main runs the tests of m with s and stops s afterwards; use it as
// `func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }`.
func (s *Suite) Main(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func containsLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Watches is the number of watches on resource (a plural such as
// "sandboxclaims") that the API server holds below the cluster scope: those
// of a namespace or of one object by name, which is how a client of one
// namespace watches. Controllers watch across the cluster and are left out.
func (e *Env) Watches(ctx context.Context, resource string) (float64, error) {
	raw, err := e.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	var n float64
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "apiserver_longrunning_requests{") &&
			strings.Contains(line, `resource="`+resource+`"`) && !strings.Contains(line, `scope="cluster"`) &&
			strings.Contains(line, `verb="WATCH"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return 0, fmt.Errorf("apiserver metrics: %q: %w", line, err)
			}
			n += v
		}
	}
	return n, nil
}
