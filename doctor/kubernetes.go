package doctor

import (
	"context"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

var (
	warmPoolGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxwarmpools"}
	templateGVR = schema.GroupVersionResource{Group: "extensions.agents.x-k8s.io", Version: "v1beta1", Resource: "sandboxtemplates"}
)

// crds are the agent-sandbox resources the launcher uses, by group version.
var crds = map[string][]string{
	"agents.x-k8s.io/v1beta1":            {"sandboxes"},
	"extensions.agents.x-k8s.io/v1beta1": {"sandboxclaims", "sandboxwarmpools", "sandboxtemplates"},
}

// KubernetesChecks check, as the launcher's own identity: the API server
// and the agent-sandbox CRDs, the namespace, the warm pool and its
// template (reading them needs more than the launcher's Role: a forbidden
// read is reported, not failed, since the claim's Ready condition names a
// missing one), and that the identity may do the launcher's job
// (SelfSubjectAccessReview).
func KubernetesChecks(cfg *rest.Config, namespace, warmPool string) []Check {
	return []Check{
		{Name: "kubernetes CRDs", Cheap: true, Run: func(ctx context.Context) (string, error) {
			cs, err := k8s.NewForConfig(cfg)
			if err != nil {
				return "", err
			}
			var lack []string
			for gv, resources := range crds {
				list, err := cs.Discovery().ServerResourcesForGroupVersion(gv)
				if err != nil && !apierrors.IsNotFound(err) {
					return "", problem("check KUBECONFIG or the in-cluster service account", "API server: %v", err)
				}
				for _, r := range resources {
					if list == nil || !hasResource(list, r) {
						lack = append(lack, r+"."+strings.Split(gv, "/")[0])
					}
				}
			}
			if len(lack) > 0 {
				return "", problem("install agent-sandbox with its extensions (docs/kubernetes.md)", "CRDs missing: %s", strings.Join(lack, ", "))
			}
			return "agent-sandbox CRDs served", nil
		}},
		{Name: "kubernetes namespace", Run: func(ctx context.Context) (string, error) {
			cs, err := k8s.NewForConfig(cfg)
			if err != nil {
				return "", err
			}
			_, err = cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
			switch {
			case apierrors.IsForbidden(err):
				return "not readable by this identity (needs no more); claims would fail if it is missing", nil
			case apierrors.IsNotFound(err):
				return "", problem("create it (kubectl create namespace "+namespace+") or set AGENTBOT_NAMESPACE", "namespace %q does not exist", namespace)
			case err != nil:
				return "", err
			}
			return namespace, nil
		}},
		{Name: "kubernetes warm pool and template", Run: func(ctx context.Context) (string, error) {
			dc, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return "", err
			}
			pool, err := dc.Resource(warmPoolGVR).Namespace(namespace).Get(ctx, warmPool, metav1.GetOptions{})
			switch {
			case apierrors.IsForbidden(err):
				return "not readable with the launcher's Role; a missing one shows in the first claim's error", nil
			case apierrors.IsNotFound(err):
				return "", problem("apply manifests/base (kubectl apply -k manifests/base) or set AGENTBOT_WARM_POOL", "SandboxWarmPool %q in namespace %q does not exist", warmPool, namespace)
			case err != nil:
				return "", err
			}
			tmpl, _, _ := unstructured.NestedString(pool.Object, "spec", "sandboxTemplateRef", "name")
			if tmpl == "" {
				return "", problem("set spec.sandboxTemplateRef.name of the warm pool", "SandboxWarmPool %q names no SandboxTemplate", warmPool)
			}
			_, err = dc.Resource(templateGVR).Namespace(namespace).Get(ctx, tmpl, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return "", problem("apply manifests/base, or point the warm pool at an existing template", "SandboxTemplate %q (named by SandboxWarmPool %q) does not exist in namespace %q", tmpl, warmPool, namespace)
			case err != nil && !apierrors.IsForbidden(err):
				return "", err
			}
			return fmt.Sprintf("SandboxWarmPool %s, SandboxTemplate %s", warmPool, tmpl), nil
		}},
		{Name: "kubernetes permissions", Cheap: true, Run: func(ctx context.Context) (string, error) {
			return accessReview(ctx, cfg, namespace)
		}},
	}
}

func hasResource(list *metav1.APIResourceList, name string) bool {
	for _, r := range list.APIResources {
		if r.Name == name {
			return true
		}
	}
	return false
}

// launcherAccess is what the launcher does (manifests/base/role.yaml).
var launcherAccess = []authorizationv1.ResourceAttributes{
	{Group: "extensions.agents.x-k8s.io", Resource: "sandboxclaims", Verb: "create"},
	{Group: "extensions.agents.x-k8s.io", Resource: "sandboxclaims", Verb: "delete"},
	{Group: "extensions.agents.x-k8s.io", Resource: "sandboxclaims", Verb: "watch"},
	{Resource: "pods", Verb: "get"},
	{Resource: "pods", Subresource: "exec", Verb: "create"},
	{Resource: "pods", Subresource: "exec", Verb: "get"},
}

func accessReview(ctx context.Context, cfg *rest.Config, namespace string) (string, error) {
	cs, err := k8s.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	var denied []string
	for _, ra := range launcherAccess {
		ra.Namespace = namespace
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra},
		}, metav1.CreateOptions{})
		if err != nil {
			return "", fmt.Errorf("SelfSubjectAccessReview: %w", err)
		}
		if !r.Status.Allowed {
			what := ra.Resource
			if ra.Subresource != "" {
				what += "/" + ra.Subresource
			}
			denied = append(denied, ra.Verb+" "+what)
		}
	}
	if len(denied) > 0 {
		return "", problem("bind manifests/base/role.yaml's Role to agentbot's service account in namespace "+namespace,
			"the launcher may not %s in namespace %q", strings.Join(denied, ", "), namespace)
	}
	return "may create and delete claims and exec into their pods", nil
}
