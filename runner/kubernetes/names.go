package kubernetes

import "github.com/agentbot/agentbot/runner/kubernetes/kname"

// Labels and annotations agentbot puts on its SandboxClaims. Label values are
// restricted (63 characters of [A-Za-z0-9._-]), so the exact task id and
// repository also travel as annotations.
const (
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	ManagedByValue   = "agentbot"
	LabelTaskID      = "agentbot.dev/task-id"
	LabelRepo        = "agentbot.dev/repo"
	AnnotationTaskID = "agentbot.dev/task-id"
	AnnotationRepo   = "agentbot.dev/repo"
)

// ClaimName is the SandboxClaim name of a task (see kname.ClaimName).
func ClaimName(taskID string) string { return kname.ClaimName(taskID) }

func labelValue(s string) string { return kname.LabelValue(s) }
