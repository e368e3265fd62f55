package kubetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agentbot/agentbot/runner/kubernetes"
)

// LocalExecutor plays the container runtime for the pods of one namespace:
// it runs a command on this machine as if inside a pod's container. Container
// paths map to local ones: the workspace to a directory per pod, binaries to
// built files.
//
// Used directly as the launcher's Executor it stands in for pods/exec (after
// checking with the API server that the pod runs and has the container);
// behind the stand-in kubelet's streaming server it serves real pods/exec
// requests that kube-apiserver forwards.
//
// Like a container runtime, it keeps a command running when its stream
// closes (the output is then discarded), and kills a pod's processes when the
// stand-in kubelet reports the pod deleted or failed.
type LocalExecutor struct {
	env       *Env
	namespace string
	root      string
	workspace string
	binaries  map[string]string

	mu    sync.Mutex
	procs map[string]map[int]struct{} // pod → process group ids
	wg    sync.WaitGroup
}

var _ kubernetes.Executor = (*LocalExecutor)(nil)

// NewExecutor returns the LocalExecutor of namespace, whose pods see their
// workspace at workspace (the launcher's Config.Workspace) and whose
// binaries map container paths to local files. Its processes are killed
// when t ends.
func (e *Env) NewExecutor(t testing.TB, namespace, workspace string, binaries map[string]string) *LocalExecutor {
	x := &LocalExecutor{
		env:       e,
		namespace: namespace,
		root:      t.TempDir(),
		workspace: workspace,
		binaries:  binaries,
		procs:     map[string]map[int]struct{}{},
	}
	e.Kubelet.OnPodGone(x.killPod)
	e.Kubelet.setRuntime(namespace, x)
	t.Cleanup(func() {
		e.Kubelet.setRuntime(namespace, nil)
		x.close()
	})
	return x
}

// WorkspaceDir is the local directory that is the pod's workspace.
func (x *LocalExecutor) WorkspaceDir(pod string) string {
	return filepath.Join(x.root, pod, "workspace")
}

// Exec implements kubernetes.Executor, without the API server.
func (x *LocalExecutor) Exec(ctx context.Context, req kubernetes.ExecRequest) (int, error) {
	if req.Namespace != x.namespace {
		return 0, fmt.Errorf("exec in pod %s/%s: this executor serves namespace %s", req.Namespace, req.Pod, x.namespace)
	}
	pod, err := x.env.Client.CoreV1().Pods(req.Namespace).Get(ctx, req.Pod, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("exec in pod %s/%s: %w", req.Namespace, req.Pod, err)
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return 0, fmt.Errorf("exec in pod %s/%s: container not running (phase %s)", req.Namespace, req.Pod, pod.Status.Phase)
	}
	found := false
	for _, c := range pod.Spec.Containers {
		found = found || c.Name == req.Container
	}
	if !found {
		return 0, fmt.Errorf("exec in pod %s/%s: container %q not found", req.Namespace, req.Pod, req.Container)
	}
	return x.run(ctx, req.Pod, req.Command, req.Stdin, req.Stdout, req.Stderr)
}

// run runs command for pod until it exits (its exit code, as a runtime
// reports it) or ctx ends (an error; the process goes on).
func (x *LocalExecutor) run(ctx context.Context, pod string, command []string, stdin io.Reader, stdoutW, stderrW io.Writer) (int, error) {
	if len(command) == 0 {
		return 0, errors.New("exec: no command")
	}
	ws := x.WorkspaceDir(pod)
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return 0, err
	}
	args := make([]string, len(command))
	for i, a := range command {
		switch {
		case a == x.workspace:
			a = ws
		case strings.HasPrefix(a, x.workspace+"/"):
			a = ws + a[len(x.workspace):]
		case x.binaries[a] != "":
			a = x.binaries[a]
		}
		args[i] = a
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "AGENTBOT_WORKSPACE="+ws)
	cmd.Dir = ws
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = stdin
	stdout := &detachable{w: stdoutW}
	stderr := &detachable{w: stderrW}
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	x.mu.Lock()
	err = cmd.Start()
	if err == nil {
		if x.procs[pod] == nil {
			x.procs[pod] = map[int]struct{}{}
		}
		x.procs[pod][cmd.Process.Pid] = struct{}{}
	}
	x.mu.Unlock()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return 0, fmt.Errorf("exec in pod %s/%s: %w", x.namespace, pod, err)
	}

	// The copies and the wait outlive run when the stream detaches, as the
	// process does; x.wg owns them.
	var copies sync.WaitGroup
	copies.Add(2)
	x.wg.Add(3)
	go func() { defer x.wg.Done(); defer copies.Done(); copyAndClose(stdout, outR) }()
	go func() { defer x.wg.Done(); defer copies.Done(); copyAndClose(stderr, errR) }()
	exited := make(chan int, 1)
	go func() {
		defer x.wg.Done()
		_ = cmd.Wait()
		copies.Wait()
		x.mu.Lock()
		delete(x.procs[pod], cmd.Process.Pid)
		x.mu.Unlock()
		exited <- exitCode(cmd.ProcessState)
	}()

	select {
	case code := <-exited:
		return code, nil
	case <-ctx.Done():
		stdout.detach()
		stderr.detach()
		return 0, fmt.Errorf("exec in pod %s/%s: stream closed: %w", x.namespace, pod, ctx.Err())
	}
}

// killPod kills the processes of a deleted or failed pod.
func (x *LocalExecutor) killPod(namespace, pod string) {
	if namespace != x.namespace {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for pid := range x.procs[pod] {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (x *LocalExecutor) close() {
	x.mu.Lock()
	for _, pids := range x.procs {
		for pid := range pids {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
	x.mu.Unlock()
	x.wg.Wait()
}

// exitCode is the code a container runtime reports: the exit status, or
// 128 + the signal that killed the process.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func copyAndClose(w io.Writer, r *os.File) {
	_, _ = io.Copy(w, r)
	r.Close()
}

// detachable forwards writes to w until detached, then discards them, as a
// runtime does with the output of an exec whose client went away.
type detachable struct {
	mu       sync.Mutex
	w        io.Writer
	detached bool
}

func (d *detachable) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.detached || d.w == nil {
		return len(p), nil
	}
	if _, err := d.w.Write(p); err != nil {
		// The reader went away: discard from now on, keep the process.
		d.detached = true
	}
	return len(p), nil
}

func (d *detachable) detach() {
	d.mu.Lock()
	d.detached = true
	d.mu.Unlock()
}
