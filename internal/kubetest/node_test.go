package kubetest

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestRealNodeRestoresHost starts the real node, runs a pod in it (an
// overlay rootfs, a network namespace and veth, kubepods cgroups), stops
// it, and checks the host is as it was: the same sysctls and iptables
// rules, no bridge, no mounts or directories of the node left.
func TestRealNodeRestoresHost(t *testing.T) {
	if os.Getenv(RealNodeEnv) != "1" {
		t.Skipf("skipping: a real node runs only with %s=1", RealNodeEnv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	absentBefore := map[string]bool{}
	for _, p := range outsidePaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			absentBefore[p] = true
		}
	}
	e, err := StartWith(ctx, Options{RealNode: true})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = e.Stop()
		}
	}()
	dir := e.node.dir
	runPod(ctx, t, e)
	if _, err := net.InterfaceByName(bridgeName); err != nil {
		t.Fatalf("bridge %s while the node runs: %v", bridgeName, err)
	}

	stopped = true
	if err := e.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	before, after, err := e.HostSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before.Sysctls, after.Sysctls) {
		t.Errorf("sysctls after the node: %v; before: %v", after.Sysctls, before.Sysctls)
	}
	if !reflect.DeepEqual(before.IPTables, after.IPTables) {
		t.Errorf("iptables after the node:\n%v\nbefore:\n%v", after.IPTables, before.IPTables)
	}
	if _, err := net.InterfaceByName(bridgeName); err == nil {
		t.Errorf("bridge %s is still there", bridgeName)
	}
	mounts, err := mountPoints()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if strings.HasPrefix(m, dir) || strings.HasPrefix(m, "/run/netns/") || strings.HasPrefix(m, "/run/containerd/") {
			t.Errorf("mount %s is left", m)
		}
	}
	for p := range absentBefore {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left", p)
		}
	}
	if _, err := os.Stat(hostStateFile); err == nil {
		t.Errorf("%s is left: the next run would sweep again", hostStateFile)
	}
}

// runPod runs a pod of the pause image with runc until it is Running.
func runPod(ctx context.Context, t *testing.T, e *Env) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "host-check"}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: ns.Name},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{
				Name: "sleeper", Image: e.Images.Pause, ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
	if _, err := e.Client.CoreV1().Pods(ns.Name).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := e.Client.CoreV1().Pods(ns.Name).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return
		}
		if err == nil {
			for _, cs := range p.Status.ContainerStatuses {
				if w := cs.State.Waiting; w != nil && w.Reason != "ContainerCreating" {
					t.Fatalf("pod cannot start: %s: %s", w.Reason, w.Message)
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod not Running (%v): %+v\nkubelet:\n%s", err, p.Status, e.nodeLog("kubelet", 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
