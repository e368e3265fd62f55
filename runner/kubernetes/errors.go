package kubernetes

import (
	"fmt"
)

// ConfigError says that a task cannot run because the cluster is set up
// wrongly: the claim's warm pool or its template is missing, or the template
// rejects what the claim asks for. Retrying will not help; the operator must
// fix Object.
type ConfigError struct {
	// Claim is "namespace/name" of the claim that reported the problem.
	Claim string
	// Reason is the claim's Ready condition reason (WarmPoolNotFound, ...).
	Reason string
	// Object names what to fix, e.g. `SandboxWarmPool "agentbot-runner" in namespace "agentbot"`.
	Object string
	// Message is the controller's message.
	Message string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("kubernetes sandbox configuration: %s: %s (claim %s, reason %s: %s)", e.Object, configAdvice(e.Reason), e.Claim, e.Reason, e.Message)
}

// configAdvice is what the operator should do for a configuration reason.
func configAdvice(reason string) string {
	switch reason {
	case "WarmPoolNotFound":
		return "not found; apply manifests/base or set AGENTBOT_WARM_POOL to an existing SandboxWarmPool"
	case "TemplateNotFound":
		return "not found; create the SandboxTemplate the warm pool names (manifests/base)"
	case "InvalidMetadata":
		return "rejected the claim's pod metadata"
	case "EnvVarsInjectionRejected":
		return "does not allow environment variables on claims"
	case "VolumeClaimTemplatesError":
		return "rejected the claim's volume claim templates"
	default:
		return "is misconfigured"
	}
}

// isConfigReason reports whether a claim Ready reason is one that no amount
// of waiting fixes.
func isConfigReason(reason string) bool {
	switch reason {
	case "WarmPoolNotFound", "TemplateNotFound", "InvalidMetadata", "EnvVarsInjectionRejected", "VolumeClaimTemplatesError":
		return true
	}
	return false
}

// SandboxError says that the sandbox of a task failed or went away: its pod
// failed or finished, the claim expired or was deleted by someone else.
type SandboxError struct {
	// Claim is "namespace/name".
	Claim string
	// Pod is the sandbox pod's name, when known.
	Pod string
	// Reason is PodFailed, PodSucceeded, ClaimExpired, ClaimDeleted, ... .
	Reason string
	// Message explains, with the pod's own reason and message where the
	// pod still exists.
	Message string
}

func (e *SandboxError) Error() string {
	s := fmt.Sprintf("kubernetes sandbox for claim %s", e.Claim)
	if e.Pod != "" {
		s += fmt.Sprintf(" (pod %s)", e.Pod)
	}
	s += ": " + e.Reason
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
