package kubetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// agentSandboxModule is the module whose CRDs the environment installs; its
// version is the one go.mod requires.
const agentSandboxModule = "sigs.k8s.io/agent-sandbox"

// crdFiles are the CRDs of agent-sandbox's core and extensions APIs, inside
// the module.
var crdFiles = []string{
	"k8s/crds/agents.x-k8s.io_sandboxes.yaml",
	"k8s/crds/extensions.agents.x-k8s.io_sandboxclaims.yaml",
	"k8s/crds/extensions.agents.x-k8s.io_sandboxtemplates.yaml",
	"k8s/crds/extensions.agents.x-k8s.io_sandboxwarmpools.yaml",
}

// ModuleDir returns the directory of agent-sandbox's module in the module
// cache, the version go.mod requires.
func ModuleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", agentSandboxModule).Output()
	if err != nil {
		return "", fmt.Errorf("kubetest: locate module %s: %w", agentSandboxModule, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("kubetest: module %s is not downloaded (go mod download %s)", agentSandboxModule, agentSandboxModule)
	}
	return dir, nil
}

// loadCRDs reads agent-sandbox's CRDs with their conversion set to None:
// the stock CRDs name a conversion webhook in the controller's namespace,
// which cannot run here, and the API server would log a failed call to it
// many times a second.
func loadCRDs(ctx context.Context) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	dir, err := ModuleDir(ctx)
	if err != nil {
		return nil, err
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range crdFiles {
		path := filepath.Join(dir, f)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("kubetest: read CRD: %w", err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.UnmarshalStrict(b, &crd); err != nil {
			return nil, fmt.Errorf("kubetest: decode CRD %s: %w", path, err)
		}
		crd.Spec.Conversion = &apiextensionsv1.CustomResourceConversion{Strategy: apiextensionsv1.NoneConverter}
		crds = append(crds, &crd)
	}
	return crds, nil
}
