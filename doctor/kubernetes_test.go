package doctor

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/agentbot/agentbot/internal/kubetest"
)

var suite kubetest.Suite

func TestMain(m *testing.M) { os.Exit(suite.Main(m)) }

var manifestGVRs = map[string]schema.GroupVersionResource{
	"ServiceAccount":  {Version: "v1", Resource: "serviceaccounts"},
	"Role":            {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":     {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"SandboxTemplate": templateGVR,
	"SandboxWarmPool": warmPoolGVR,
}

// applyManifests creates manifests/base's service account, Role (edited
// by editRole), binding, template and warm pool in ns.
func applyManifests(t *testing.T, env *kubetest.Env, ns string, editRole func(*unstructured.Unstructured)) {
	t.Helper()
	objs, err := kubetest.RenderKustomization("../manifests/base")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		gvr, ok := manifestGVRs[o.GetKind()]
		if !ok {
			continue
		}
		o.SetNamespace(ns)
		switch o.GetKind() {
		case "RoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				s.(map[string]any)["namespace"] = ns
			}
			if err := unstructured.SetNestedSlice(o.Object, subjects, "subjects"); err != nil {
				t.Fatal(err)
			}
		case "Role":
			editRole(o)
		case "SandboxWarmPool":
			if err := unstructured.SetNestedField(o.Object, int64(0), "spec", "replicas"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := env.Dynamic.Resource(gvr).Namespace(ns).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

// asServiceAccount is a client configuration with a token of ns's agentbot
// service account.
func asServiceAccount(t *testing.T, env *kubetest.Env, ns string) *rest.Config {
	t.Helper()
	exp := int64(3600)
	tr, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), "agentbot", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tr.Status.Token
	return cfg
}

// dropExec removes pods/exec from the Role's rules.
func dropExec(role *unstructured.Unstructured) {
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	var kept []any
	for _, r := range rules {
		res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
		if len(res) == 1 && res[0] == "pods/exec" {
			continue
		}
		kept = append(kept, r)
	}
	_ = unstructured.SetNestedSlice(role.Object, kept, "rules")
}

func TestKubernetesChecks(t *testing.T) {
	env := suite.Env(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		editRole func(*unstructured.Unstructured)
		pool     string
		want     map[string]string // failing check → words its problem says
	}{
		{"manifests' Role", func(*unstructured.Unstructured) {}, "agentbot-runner", nil},
		{"Role without exec", dropExec, "agentbot-runner", map[string]string{"kubernetes permissions": "create pods/exec, get pods/exec"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := env.Namespace(t)
			applyManifests(t, env, ns, tt.editRole)
			cfg := asServiceAccount(t, env, ns)
			f := failures(t, Run(ctx, KubernetesChecks(cfg, ns, tt.pool), 30*time.Second))
			if len(f) != len(tt.want) {
				t.Errorf("problems %v, want %v", f, tt.want)
			}
			for name, words := range tt.want {
				if !strings.Contains(f[name], words) {
					t.Errorf("check %s = %q, want it to say %q", name, f[name], words)
				}
			}
		})
	}

	// As an administrator, what the Role cannot read is checked too: a
	// warm pool that is not there, a namespace that is not there.
	ns := env.Namespace(t)
	applyManifests(t, env, ns, func(*unstructured.Unstructured) {})
	f := failures(t, Run(ctx, KubernetesChecks(env.Config, ns, "no-such-pool"), 30*time.Second))
	if !strings.Contains(f["kubernetes warm pool and template"], `SandboxWarmPool "no-such-pool"`) {
		t.Errorf("missing warm pool: %v", f)
	}
	f = failures(t, Run(ctx, KubernetesChecks(env.Config, "no-such-namespace", "agentbot-runner"), 30*time.Second))
	if !strings.Contains(f["kubernetes namespace"], "does not exist") {
		t.Errorf("missing namespace: %v", f)
	}
}
