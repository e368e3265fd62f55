package kubetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kustomization is the subset of kustomize's Kustomization that manifests/
// uses. Render refuses any other field, so a manifest change that needs real
// kustomize fails the tests instead of being half-rendered.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels,omitempty"`
	Patches []struct {
		Target struct {
			Group   string `json:"group,omitempty"`
			Version string `json:"version,omitempty"`
			Kind    string `json:"kind"`
			Name    string `json:"name,omitempty"`
		} `json:"target"`
		Patch string `json:"patch"`
	} `json:"patches,omitempty"`
}

// RenderKustomization renders the kustomization in dir the way
// `kubectl kustomize` does for the features manifests/ uses: resources
// (files and directories), namespace, labels without selectors, and inline
// JSON 6902 patches with a target.
func RenderKustomization(dir string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, fmt.Errorf("kubetest: %s/kustomization.yaml uses something this renderer does not support: %w", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range k.Resources {
		path := filepath.Join(dir, r)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("kubetest: resource %s: %w", r, err)
		}
		var more []*unstructured.Unstructured
		if fi.IsDir() {
			more, err = RenderKustomization(path)
		} else {
			more, err = decodeFile(path)
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, more...)
	}
	for _, o := range objs {
		if k.Namespace != "" && o.GetKind() != "Namespace" && namespaced(o.GetKind()) {
			o.SetNamespace(k.Namespace)
		}
		for _, l := range k.Labels {
			if l.IncludeSelectors {
				return nil, fmt.Errorf("kubetest: %s: labels with includeSelectors are not supported", dir)
			}
			labels := o.GetLabels()
			if labels == nil {
				labels = map[string]string{}
			}
			for key, v := range l.Pairs {
				labels[key] = v
			}
			o.SetLabels(labels)
		}
	}
	for _, p := range k.Patches {
		ops, err := yaml.YAMLToJSON([]byte(p.Patch))
		if err != nil {
			return nil, fmt.Errorf("kubetest: %s: patch: %w", dir, err)
		}
		patch, err := jsonpatch.DecodePatch(ops)
		if err != nil {
			return nil, fmt.Errorf("kubetest: %s: patch: %w", dir, err)
		}
		matched := 0
		for i, o := range objs {
			gvk := o.GroupVersionKind()
			t := p.Target
			if gvk.Kind != t.Kind || (t.Group != "" && gvk.Group != t.Group) || (t.Version != "" && gvk.Version != t.Version) || (t.Name != "" && o.GetName() != t.Name) {
				continue
			}
			doc, err := json.Marshal(o.Object)
			if err != nil {
				return nil, err
			}
			doc, err = patch.Apply(doc)
			if err != nil {
				return nil, fmt.Errorf("kubetest: %s: patch %s/%s: %w", dir, t.Kind, t.Name, err)
			}
			var obj unstructured.Unstructured
			if err := obj.UnmarshalJSON(doc); err != nil {
				return nil, err
			}
			objs[i] = &obj
			matched++
		}
		if matched == 0 {
			return nil, fmt.Errorf("kubetest: %s: patch target %s/%s matches nothing", dir, p.Target.Kind, p.Target.Name)
		}
	}
	return objs, nil
}

// namespaced lists the cluster-scoped kinds manifests/ could hold; all
// others are namespaced.
func namespaced(kind string) bool {
	switch kind {
	case "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "RuntimeClass", "PriorityClass":
		return false
	}
	return true
}

func decodeFile(path string) ([]*unstructured.Unstructured, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("kubetest: decode %s: %w", path, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs, nil
}
