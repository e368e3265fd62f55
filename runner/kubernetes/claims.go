package kubernetes

// Watching a claim, and explaining why its sandbox cannot run agent-runner.

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sandboxv1beta1 "sigs.k8s.io/agent-sandbox/api/v1beta1"
	extv1beta1 "sigs.k8s.io/agent-sandbox/extensions/api/v1beta1"
)

// waitReady watches the claim until it is Ready with a sandbox name, fails
// with a ConfigError or SandboxError, or ReadyTimeout passes.
func (l *Launcher) waitReady(ctx context.Context, name string) (*extv1beta1.SandboxClaim, error) {
	ref := l.claimRef(name)
	wctx, cancel := context.WithTimeout(ctx, l.cfg.ReadyTimeout)
	defer cancel()
	var last *extv1beta1.SandboxClaim
	claim, err := l.watchClaim(wctx, name, func(c *extv1beta1.SandboxClaim) (bool, error) {
		if c == nil {
			return false, &SandboxError{Claim: ref, Reason: reasonClaimDeleted, Message: "the claim was deleted while waiting for its sandbox"}
		}
		last = c
		if claimReady(c) {
			return true, nil
		}
		if ready := meta.FindStatusCondition(c.Status.Conditions, string(sandboxv1beta1.SandboxConditionReady)); ready != nil && isConfigReason(ready.Reason) {
			return false, l.configError(c, ready)
		}
		if serr := l.sandboxFailure(ctx, c); serr != nil {
			return false, serr
		}
		return false, nil
	})
	if err == nil {
		return claim, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		reason := "no status yet"
		if last != nil {
			reason = readyReason(last)
		}
		return nil, &SandboxError{Claim: ref, Reason: reasonReadyTimeout, Message: fmt.Sprintf("not ready after %s (%s)", l.cfg.ReadyTimeout, reason)}
	}
	var cfgErr *ConfigError
	var sbErr *SandboxError
	if errors.As(err, &cfgErr) || errors.As(err, &sbErr) {
		return nil, err
	}
	return nil, fmt.Errorf("wait for claim %s to be ready: %w", ref, err)
}

// waitGone watches the claim until it no longer exists.
func (l *Launcher) waitGone(ctx context.Context, name string) error {
	_, err := l.watchClaim(ctx, name, func(c *extv1beta1.SandboxClaim) (bool, error) {
		return c == nil, nil
	})
	if err != nil {
		return fmt.Errorf("wait for claim %s to be deleted: %w", l.claimRef(name), err)
	}
	return nil
}

// sandboxFailure reports why the claim's sandbox cannot (any longer) run
// agent-runner, or nil while it can. A failed pod's own reason and message
// are added when the pod is still there to ask.
func (l *Launcher) sandboxFailure(ctx context.Context, c *extv1beta1.SandboxClaim) *SandboxError {
	ref := l.claimRef(c.Name)
	pod := c.Status.SandboxStatus.Name
	if c.DeletionTimestamp != nil {
		return &SandboxError{Claim: ref, Pod: pod, Reason: reasonClaimDeleted, Message: "the claim is being deleted"}
	}
	var cond *metav1.Condition
	if f := meta.FindStatusCondition(c.Status.Conditions, string(sandboxv1beta1.SandboxConditionFinished)); f != nil && f.Status == metav1.ConditionTrue {
		cond = f
	} else if r := meta.FindStatusCondition(c.Status.Conditions, string(sandboxv1beta1.SandboxConditionReady)); r != nil && r.Status != metav1.ConditionTrue {
		switch r.Reason {
		case sandboxv1beta1.SandboxReasonPodFailed, sandboxv1beta1.SandboxReasonPodSucceeded,
			extv1beta1.ClaimExpiredReason, sandboxv1beta1.SandboxReasonExpired:
			cond = r
		}
	}
	if cond == nil {
		return nil
	}
	msg := cond.Message
	if pod != "" && cond.Reason == sandboxv1beta1.SandboxReasonPodFailed {
		if p, err := l.pods.Get(ctx, pod, metav1.GetOptions{}); err == nil {
			msg = podState(p)
		}
	}
	return &SandboxError{Claim: ref, Pod: pod, Reason: cond.Reason, Message: msg}
}

// awaitSandboxFailure waits up to d for the claim to report a sandbox
// failure and returns it, or nil when none shows.
func (l *Launcher) awaitSandboxFailure(ctx context.Context, name string, d time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	_, err := l.watchClaim(wctx, name, func(c *extv1beta1.SandboxClaim) (bool, error) {
		if c == nil {
			return false, &SandboxError{Claim: l.claimRef(name), Reason: reasonClaimDeleted, Message: "the claim was deleted while agent-runner ran"}
		}
		if serr := l.sandboxFailure(ctx, c); serr != nil {
			return false, serr
		}
		return false, nil
	})
	var serr *SandboxError
	if errors.As(err, &serr) {
		l.countFailure(serr)
		return serr
	}
	return nil
}

// configError builds the ConfigError for a claim whose Ready reason is a
// configuration reason.
func (l *Launcher) configError(c *extv1beta1.SandboxClaim, ready *metav1.Condition) *ConfigError {
	object := fmt.Sprintf("SandboxWarmPool %q in namespace %q", c.Spec.WarmPoolRef.Name, c.Namespace)
	if ready.Reason == "TemplateNotFound" {
		object = fmt.Sprintf("the SandboxTemplate named by SandboxWarmPool %q in namespace %q", c.Spec.WarmPoolRef.Name, c.Namespace)
	}
	if ready.Reason != "WarmPoolNotFound" && ready.Reason != "TemplateNotFound" {
		object = fmt.Sprintf("the SandboxTemplate of SandboxWarmPool %q in namespace %q", c.Spec.WarmPoolRef.Name, c.Namespace)
	}
	return &ConfigError{Claim: l.claimRef(c.Name), Reason: ready.Reason, Object: object, Message: ready.Message}
}

// claimReady reports whether the claim's sandbox is ready to exec into.
func claimReady(c *extv1beta1.SandboxClaim) bool {
	return c.DeletionTimestamp == nil &&
		meta.IsStatusConditionTrue(c.Status.Conditions, string(sandboxv1beta1.SandboxConditionReady)) &&
		c.Status.SandboxStatus.Name != ""
}

// readyReason is "Reason: message" of the claim's Ready condition.
func readyReason(c *extv1beta1.SandboxClaim) string {
	r := meta.FindStatusCondition(c.Status.Conditions, string(sandboxv1beta1.SandboxConditionReady))
	if r == nil {
		return "no Ready condition yet"
	}
	return r.Reason + ": " + r.Message
}

// podState describes a pod's phase with its own reason and message and those
// of a terminated container, e.g. "Failed (Evicted: node ran out of memory;
// container runner terminated: OOMKilled, exit code 137)".
func podState(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "being deleted"
	}
	s := string(p.Status.Phase)
	var details []string
	if p.Status.Reason != "" || p.Status.Message != "" {
		d := p.Status.Reason
		if p.Status.Message != "" {
			if d != "" {
				d += ": "
			}
			d += p.Status.Message
		}
		details = append(details, d)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			d := fmt.Sprintf("container %s terminated: %s, exit code %d", cs.Name, t.Reason, t.ExitCode)
			if t.Message != "" {
				d += ": " + t.Message
			}
			details = append(details, d)
		}
	}
	for i, d := range details {
		if i == 0 {
			s += " (" + d
		} else {
			s += "; " + d
		}
		if i == len(details)-1 {
			s += ")"
		}
	}
	return s
}
