package kubernetes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	extv1beta1 "sigs.k8s.io/agent-sandbox/extensions/api/v1beta1"

	"github.com/agentbot/agentbot/internal/kubetest"
)

// TestManifestsApply sends every object of manifests/base and its overlays
// to the API server as a dry-run create with strict field validation, so a
// misspelt field or a schema error in any of them fails here, and checks
// the properties the deployment relies on.
func TestManifestsApply(t *testing.T) {
	env := suite.Env(t)
	ctx := context.Background()
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(env.Client.Discovery()))

	for _, c := range []struct {
		dir            string
		runtimeClass   string
		wantNamespaces int
	}{
		{"../../manifests/base", "", 1},
		{"../../manifests/overlays/gvisor", "gvisor", 1},
		{"../../manifests/overlays/kata", "kata-qemu", 1},
	} {
		t.Run(c.dir, func(t *testing.T) {
			objs, err := kubetest.RenderKustomization(c.dir)
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[string]int{}
			for _, o := range objs {
				kinds[o.GetKind()]++
				if o.GetKind() == "Namespace" {
					// Dry-run objects need their namespace to exist.
					_, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.GetName()}}, metav1.CreateOptions{})
					if err != nil && !apierrors.IsAlreadyExists(err) {
						t.Fatal(err)
					}
					continue
				}
				gvk := o.GroupVersionKind()
				m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					t.Fatalf("%s %s: %v", gvk, o.GetName(), err)
				}
				_, err = env.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace()).Create(ctx, o, metav1.CreateOptions{
					DryRun:          []string{metav1.DryRunAll},
					FieldValidation: metav1.FieldValidationStrict,
				})
				if err != nil {
					t.Errorf("%s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
			}
			for _, k := range []string{"Namespace", "ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment", "Service", "NetworkPolicy", "SandboxTemplate", "SandboxWarmPool"} {
				if kinds[k] != 1 {
					t.Errorf("%d objects of kind %s; want 1", kinds[k], k)
				}
			}
			checkDeployment(t, find[appsv1.Deployment](t, objs, "Deployment"))
			checkGatewayPort(t, find[corev1.Service](t, objs, "Service"), find[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy"))
			checkTemplate(t, find[extv1beta1.SandboxTemplate](t, objs, "SandboxTemplate"), c.runtimeClass)
			pool := find[extv1beta1.SandboxWarmPool](t, objs, "SandboxWarmPool")
			if pool.Spec.Replicas == nil || *pool.Spec.Replicas != 2 || pool.Spec.TemplateRef.Name != "agentbot-runner" || pool.Name != "agentbot-runner" {
				t.Errorf("warm pool = %+v", pool.Spec)
			}
		})
	}
}

// find converts the one object of kind to its Go type.
func find[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) *T {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind {
			var v T
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			return &v
		}
	}
	t.Fatalf("no %s", kind)
	return nil
}

func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	problems := map[string]bool{
		"one replica":                   d.Spec.Replicas != nil && *d.Spec.Replicas == 1,
		"Recreate strategy":             d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType,
		"service account agentbot":      spec.ServiceAccountName == "agentbot",
		"pod runs as non-root":          spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot,
		"prometheus scrape":             d.Spec.Template.Annotations["prometheus.io/scrape"] == "true",
		"one container":                 len(spec.Containers) == 1,
		"data on a PVC":                 hasVolume(spec, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil }),
		"secrets from a Secret (files)": hasVolume(spec, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "agentbot" }),
	}
	if len(spec.Containers) == 1 {
		c := spec.Containers[0]
		problems["readiness on /readyz"] = c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path == "/readyz"
		problems["liveness on /healthz"] = c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path == "/healthz"
		problems["read-only root"] = c.SecurityContext != nil && c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem
		problems["no privilege escalation"] = c.SecurityContext != nil && c.SecurityContext.AllowPrivilegeEscalation != nil && !*c.SecurityContext.AllowPrivilegeEscalation
		problems["requests and limits"] = len(c.Resources.Requests) > 0 && len(c.Resources.Limits) > 0
		problems["prometheus scrapes the metrics listener"] = envValue(c, "AGENTBOT_METRICS_LISTEN") == ":"+d.Spec.Template.Annotations["prometheus.io/port"] &&
			slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
				return fmt.Sprint(p.ContainerPort) == d.Spec.Template.Annotations["prometheus.io/port"]
			})
		problems["kubernetes launcher"] = envValue(c, "AGENTBOT_LAUNCHER") == "kubernetes" && envValue(c, "AGENTBOT_WARM_POOL") == "agentbot-runner"
		problems["gateway listener on the gateway port"] = envValue(c, "AGENTBOT_GATEWAY_LISTEN") == ":8444" &&
			envValue(c, "AGENTBOT_GATEWAY_ADDR") == "agentbot.$(AGENTBOT_NAMESPACE).svc:8444" && containerPort(c, "gateway") == 8444
	}
	for what, ok := range problems {
		if !ok {
			t.Errorf("Deployment: want %s", what)
		}
	}
}

func checkTemplate(t *testing.T, tpl *extv1beta1.SandboxTemplate, runtimeClass string) {
	t.Helper()
	spec := tpl.Spec.PodTemplate.Spec
	checks := map[string]bool{
		"restartPolicy Never":            spec.RestartPolicy == corev1.RestartPolicyNever,
		"no service account token":       spec.AutomountServiceAccountToken != nil && !*spec.AutomountServiceAccountToken,
		"non-root":                       spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot,
		"container named runner":         len(spec.Containers) == 1 && spec.Containers[0].Name == "runner",
		"workspace volume":               hasVolume(spec, func(v corev1.Volume) bool { return v.Name == "workspace" && v.EmptyDir != nil }),
		"runtime class " + runtimeClass:  (runtimeClass == "" && spec.RuntimeClassName == nil) || (spec.RuntimeClassName != nil && *spec.RuntimeClassName == runtimeClass),
		"network policy without ingress": tpl.Spec.NetworkPolicy != nil && len(tpl.Spec.NetworkPolicy.Ingress) == 0,
		"no env injection from claims":   tpl.Spec.EnvVarsInjectionPolicy == "" || tpl.Spec.EnvVarsInjectionPolicy == extv1beta1.EnvVarsInjectionPolicyDisallowed,
	}
	if len(spec.Containers) == 1 {
		c := spec.Containers[0]
		checks["limits"] = len(c.Resources.Limits) > 0
		// The sandbox holds no credential: the gateway adds them.
		checks["no credential in the pod"] = len(c.EnvFrom) == 0
		for _, e := range c.Env {
			name := strings.ToUpper(e.Name)
			if e.ValueFrom != nil || strings.Contains(name, "KEY") || strings.Contains(name, "TOKEN") || strings.Contains(name, "SECRET") {
				checks["no credential in the pod"] = false
				t.Errorf("SandboxTemplate: env %s would put a credential in the sandbox", e.Name)
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil || v.Projected != nil {
				checks["no credential in the pod"] = false
				t.Errorf("SandboxTemplate: volume %s mounts a secret", v.Name)
			}
		}
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("SandboxTemplate: want %s", what)
		}
	}
	if tpl.Spec.NetworkPolicy == nil {
		return
	}
	checkSandboxEgress(t, tpl.Spec.NetworkPolicy.Egress)
}

// checkSandboxEgress: a sandbox may reach the cluster DNS on 53 and the
// agentbot pod's gateway port, and no other address or port.
func checkSandboxEgress(t *testing.T, egress []networkingv1.NetworkPolicyEgressRule) {
	t.Helper()
	gateway := false
	for _, rule := range egress {
		if len(rule.Ports) == 0 || len(rule.To) == 0 {
			t.Errorf("egress rule without ports or peers allows too much: %+v", rule)
		}
		for _, to := range rule.To {
			if to.IPBlock != nil || to.PodSelector == nil {
				t.Errorf("egress to %+v; want only selected pods (kube-dns, agentbot)", to)
			}
		}
		for _, p := range rule.Ports {
			switch {
			case p.Port == nil || p.EndPort != nil:
				t.Errorf("egress port range %+v; want single ports", p)
			case p.Port.IntValue() == 53:
				if len(rule.To) != 1 || rule.To[0].PodSelector.MatchLabels["k8s-app"] != "kube-dns" || rule.To[0].NamespaceSelector == nil {
					t.Errorf("port 53 to %+v; want only kube-dns in kube-system", rule.To)
				}
			case p.Port.IntValue() == 8444 && p.Protocol != nil && *p.Protocol == corev1.ProtocolTCP:
				gateway = len(rule.To) == 1 && rule.To[0].NamespaceSelector == nil &&
					rule.To[0].PodSelector.MatchLabels["app.kubernetes.io/name"] == "agentbot"
				if !gateway {
					t.Errorf("port 8444 to %+v; want only the agentbot pod of the namespace", rule.To)
				}
			default:
				t.Errorf("egress port %s; want only 53 and the gateway's 8444", fmt.Sprint(p.Port))
			}
		}
	}
	if !gateway {
		t.Error("SandboxTemplate: want egress to the agentbot pod's gateway port 8444")
	}
}

// checkGatewayPort: the Service carries the gateway port, and the agentbot
// pod takes it only from sandbox pods.
func checkGatewayPort(t *testing.T, svc *corev1.Service, np *networkingv1.NetworkPolicy) {
	t.Helper()
	found := false
	for _, p := range svc.Spec.Ports {
		if p.Name == "gateway" {
			found = p.Port == 8444 && p.TargetPort.String() == "gateway" && p.Protocol == corev1.ProtocolTCP
		}
	}
	if !found || svc.Spec.Type != "" && svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("Service: want a ClusterIP port gateway 8444 -> gateway; got %s %+v", svc.Spec.Type, svc.Spec.Ports)
	}
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "agentbot" || len(np.Spec.PolicyTypes) != 1 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress {
		t.Errorf("NetworkPolicy %s selects %+v for %v; want the agentbot pod's ingress", np.Name, np.Spec.PodSelector, np.Spec.PolicyTypes)
	}
	for _, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port != nil && p.Port.IntValue() == 8444 {
				if len(rule.From) != 1 || rule.From[0].PodSelector == nil || rule.From[0].NamespaceSelector != nil ||
					rule.From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "agentbot-runner" {
					t.Errorf("gateway port open to %+v; want only the sandbox pods", rule.From)
				}
			}
		}
	}
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func hasVolume(spec corev1.PodSpec, match func(corev1.Volume) bool) bool {
	for _, v := range spec.Volumes {
		if match(v) {
			return true
		}
	}
	return false
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}
