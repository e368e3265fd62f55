package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestRenderKustomization(t *testing.T) {
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      containers: [{name: app, image: app}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: space
`
	cases := []struct {
		name    string
		files   map[string]string
		check   func(t *testing.T, out string)
		wantErr string
	}{
		{
			name: "namespace, labels and a patch through an overlay",
			files: map[string]string{
				"base/kustomization.yaml": "namespace: space\nlabels:\n- pairs: {team: a}\nresources: [app.yaml]\n",
				"base/app.yaml":           deployment,
				"over/kustomization.yaml": "resources: [../base]\npatches:\n- target: {kind: Deployment, name: app}\n  patch: |-\n    - op: add\n      path: /spec/replicas\n      value: 3\n",
			},
			check: func(t *testing.T, out string) {
				for _, want := range []string{"Deployment/space/app", "replicas=3", "team=a", "Namespace//space"} {
					if !strings.Contains(out, want) {
						t.Errorf("rendered %q lacks %q", out, want)
					}
				}
			},
		},
		{
			name:    "unsupported field",
			files:   map[string]string{"over/kustomization.yaml": "resources: []\nnamePrefix: x-\n"},
			wantErr: "does not support",
		},
		{
			name: "patch that matches nothing",
			files: map[string]string{
				"base/kustomization.yaml": "resources: [app.yaml]\n",
				"base/app.yaml":           deployment,
				"over/kustomization.yaml": "resources: [../base]\npatches:\n- target: {kind: Deployment, name: other}\n  patch: '[]'\n",
			},
			wantErr: "matches nothing",
		},
		{
			name:    "missing resource",
			files:   map[string]string{"over/kustomization.yaml": "resources: [gone.yaml]\n"},
			wantErr: "gone.yaml",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range c.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			objs, err := RenderKustomization(filepath.Join(dir, "over"))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v; want one mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, o := range objs {
				b.WriteString(o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName() + " ")
				if r, ok, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "replicas"); ok {
					b.WriteString(fmt.Sprintf("replicas=%v ", r))
				}
				for k, v := range o.GetLabels() {
					b.WriteString(k + "=" + v + " ")
				}
			}
			c.check(t, b.String())
		})
	}
}
