package kubetest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// NodeName is the one node of the environment; the stand-in kubelet binds
// every pod to it and serves its exec requests.
const NodeName = "kubetest-node"

// startStreaming serves the kubelet's exec endpoint on 127.0.0.1 with the
// kubelet's own streaming code (k8s.io/cri-streaming), running commands with
// the LocalExecutor of the pod's namespace, and registers the node so that
// kube-apiserver sends pods/exec requests here. The API server talks to a
// kubelet without a configured CA insecurely, so a self-signed certificate
// will do.
func (k *Kubelet) startStreaming(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/{namespace}/{pod}/{container}", k.serveExec)
	srv := httptest.NewUnstartedServer(mux)
	srv.StartTLS()
	k.streaming = srv

	_, portText, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("kubetest: %w", err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}}
	node, err = k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("kubetest: create node: %w", err)
	}
	node.Status = corev1.NodeStatus{
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(port)}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
	}
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubetest: node status: %w", err)
	}
	return nil
}

// serveExec is the kubelet's /exec/{namespace}/{pod}/{container} endpoint.
func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	x := k.runtime(ns)
	if x == nil {
		http.Error(w, fmt.Sprintf("no container runtime for namespace %s (the test made no LocalExecutor for it)", ns), http.StatusInternalServerError)
		return
	}
	p, err := k.client.CoreV1().Pods(ns).Get(r.Context(), pod, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && p.Status.Phase != corev1.PodRunning) {
		http.Error(w, fmt.Sprintf("container %s of pod %s/%s is not running", container, ns, pod), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()["command"]
	remotecommand.ServeExec(w, r, runtimeFor{x}, pod, string(p.UID), container, cmd, opts,
		5*time.Minute, remotecommand.DefaultStreamCreationTimeout, remotecommand.SupportedStreamingProtocols)
}

// runtimeFor adapts a LocalExecutor to the streaming server's Executor.
type runtimeFor struct{ x *LocalExecutor }

func (rt runtimeFor) ExecInContainer(ctx context.Context, pod, _, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if tty {
		return fmt.Errorf("kubetest: tty exec is not supported")
	}
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errOut != nil {
		stderr = errOut
	}
	code, err := rt.x.run(ctx, pod, cmd, in, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %s exited with %d", strings.Join(cmd, " "), code), Code: code}
	}
	return nil
}
