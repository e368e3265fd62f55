package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agentbot/agentbot/internal/kubetest"
	"github.com/agentbot/agentbot/runner"
	"github.com/agentbot/agentbot/runner/kubernetes"
)

// applyRBAC creates the ServiceAccount, Role and RoleBinding of
// manifests/base in the fixture's namespace.
func (f *fixture) applyRBAC(t *testing.T) {
	t.Helper()
	objs, err := kubetest.RenderKustomization("../../manifests/base")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	gvrs := map[string]schema.GroupVersionResource{
		"ServiceAccount": {Version: "v1", Resource: "serviceaccounts"},
		"Role":           {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		"RoleBinding":    {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	}
	n := 0
	for _, o := range objs {
		gvr, ok := gvrs[o.GetKind()]
		if !ok {
			continue
		}
		o.SetNamespace(f.ns)
		if o.GetKind() == "RoleBinding" {
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				s.(map[string]any)["namespace"] = f.ns
			}
			if err := unstructured.SetNestedSlice(o.Object, subjects, "subjects"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.env.Dynamic.Resource(gvr).Namespace(f.ns).Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("manifests/base has %d of ServiceAccount, Role, RoleBinding; want 3", n)
	}
}

// serviceAccountConfig is a client configuration that authenticates with a
// fresh token of the namespace's service account name.
func (f *fixture) serviceAccountConfig(t *testing.T, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	if _, err := f.env.Client.CoreV1().ServiceAccounts(f.ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := f.env.Client.CoreV1().ServiceAccounts(f.ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expiry := int64(3600)
	tr, err := f.env.Client.CoreV1().ServiceAccounts(f.ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(f.env.Config)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

// TestRBACRoleIsExactlyEnough: with the Role from manifests/base bound to
// its ServiceAccount, the launcher does its whole job, and the account can
// do nothing else that matters (no secrets, no pods of its own).
func TestRBACRoleIsExactlyEnough(t *testing.T) {
	f := newFixture(t, fixtureOptions{warmReplicas: 0, podExec: true})
	f.applyRBAC(t)
	cfg := f.serviceAccountConfig(t, "agentbot")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The launcher's whole job, as the service account, exec included.
	l, _ := f.launcher(t, cfg, nil)
	g := f.gate("release")
	job := f.job("01JTASK-RBAC", f.script(t, "agent.sh", g.wait()+editScript))
	run, err := l.Start(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	until(ctx, t, run, isPhase(runner.PhaseAgent))

	// The same exec from an account without the Role is forbidden.
	pe, err := kubernetes.NewPodExecutor(f.serviceAccountConfig(t, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pe.Exec(ctx, kubernetes.ExecRequest{
		Namespace: f.ns, Pod: kubernetes.ClaimName(job.TaskID), Container: kubernetes.DefaultContainer,
		Command: []string{"true"}, Stdout: &bytes.Buffer{},
	})
	if err == nil || !strings.Contains(err.Error(), "is forbidden") {
		t.Errorf("exec as a stranger: %v; want forbidden", err)
	}

	g.open(t)
	collect(ctx, t, run)
	if exit, err := run.Wait(ctx); err != nil || exit.Code != runner.ExitOK {
		t.Fatalf("Wait = %d, %v", exit.Code, err)
	}
	if err := run.Bundle(ctx, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Cleanup(ctx, job.TaskID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Attach(ctx, job.TaskID, 0); !errors.Is(err, runner.ErrGone) {
		t.Fatalf("Attach after Cleanup = %v; want ErrGone", err)
	}

	// What it must not do, tried for real.
	sa, err := k8s.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets(f.ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list secrets: %v; want forbidden", err)
	}
	direct := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "direct"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if _, err := sa.CoreV1().Pods(f.ns).Create(ctx, direct, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("create pod: %v; want forbidden", err)
	}

	// And the exact rule set, asked of the authorizer.
	user := "system:serviceaccount:" + f.ns + ":agentbot"
	for _, c := range []struct {
		group, resource, sub, verb string
		allowed                    bool
	}{
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "create", true},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "get", true},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "list", true},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "watch", true},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "delete", true},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "update", false},
		{"extensions.agents.x-k8s.io", "sandboxclaims", "", "patch", false},
		{"extensions.agents.x-k8s.io", "sandboxtemplates", "", "get", false},
		{"extensions.agents.x-k8s.io", "sandboxwarmpools", "", "update", false},
		{"agents.x-k8s.io", "sandboxes", "", "create", false},
		{"", "pods", "", "get", true},
		{"", "pods", "", "list", false},
		{"", "pods", "", "create", false},
		{"", "pods", "", "delete", false},
		{"", "pods", "exec", "create", true},
		{"", "pods", "exec", "get", true},
		{"", "pods", "attach", "create", false},
		{"", "pods", "portforward", "create", false},
		{"", "pods", "log", "get", false},
		{"", "secrets", "", "get", false},
		{"", "configmaps", "", "get", false},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: f.ns, Group: c.group, Resource: c.resource, Subresource: c.sub, Verb: c.verb,
			},
		}}
		res, err := f.env.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.Allowed != c.allowed {
			t.Errorf("%s %s/%s %s: allowed = %v; want %v", c.verb, c.group, strings.TrimSuffix(c.resource+"/"+c.sub, "/"), user, res.Status.Allowed, c.allowed)
		}
	}
}
