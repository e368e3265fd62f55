package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	sandboxclient "sigs.k8s.io/agent-sandbox/clients/k8s/extensions/clientset/versioned"
	claimclient "sigs.k8s.io/agent-sandbox/clients/k8s/extensions/clientset/versioned/typed/api/v1beta1"
	extv1beta1 "sigs.k8s.io/agent-sandbox/extensions/api/v1beta1"

	"github.com/agentbot/agentbot/runner"
)

// Reasons the launcher itself reports in SandboxError and metrics, next to
// the controller's own (PodFailed, ClaimExpired, ...).
const (
	reasonClaimDeleted = "ClaimDeleted"
	reasonPodGone      = "PodGone"
	reasonReadyTimeout = "ReadyTimeout"
)

// Launcher runs task attempts in agent-sandbox sandboxes. It implements
// runner.Launcher.
type Launcher struct {
	cfg     Config
	claims  claimclient.SandboxClaimInterface
	pods    corev1client.PodInterface
	exec    Executor
	metrics *metrics
	log     *slog.Logger

	claimCache *claimCache // the shared watch of agentbot's claims

	// life is the launcher's lifetime, not a request's: the context of
	// every run's loop, which outlives the call that started it and ends
	// with Close (endLife). wg counts the loops for Close.
	life    context.Context
	endLife context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	closing bool
}

// errClosed is returned by Start and Attach after Close.
var errClosed = errors.New("the kubernetes launcher is closed")

var _ runner.Launcher = (*Launcher)(nil)

// Option changes how New builds the Launcher.
type Option func(*Launcher)

// WithExecutor replaces pods/exec by e. Tests use it to run agent-runner
// locally while everything else talks to a real API server.
func WithExecutor(e Executor) Option {
	return func(l *Launcher) { l.exec = e }
}

// New returns a Launcher that talks to the API server of restConfig (use
// rest.InClusterConfig in a pod) and registers its metrics on reg.
func New(cfg Config, restConfig *rest.Config, reg *prometheus.Registry, log *slog.Logger, opts ...Option) (*Launcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if restConfig == nil {
		return nil, errors.New("kubernetes launcher: no API server configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The launcher's own rate limit, whatever the kubeconfig (which has
	// none) or the in-cluster configuration says.
	restConfig = rest.CopyConfig(restConfig)
	restConfig.QPS, restConfig.Burst = cfg.QPS, cfg.Burst
	sc, err := sandboxclient.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes launcher: agent-sandbox client: %w", err)
	}
	kc, err := k8s.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes launcher: kubernetes client: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	l := &Launcher{
		cfg:     cfg,
		claims:  sc.ExtensionsV1beta1().SandboxClaims(cfg.Namespace),
		pods:    kc.CoreV1().Pods(cfg.Namespace),
		metrics: m,
		log:     log.With("launcher", "kubernetes", "namespace", cfg.Namespace),
	}
	for _, o := range opts {
		o(l)
	}
	if l.exec == nil {
		pe, err := NewPodExecutor(restConfig)
		if err != nil {
			return nil, err
		}
		l.exec = pe
	}
	l.life, l.endLife = context.WithCancel(context.Background())
	l.claimCache = newClaimCache(l)
	return l, nil
}

// Name implements runner.Launcher.
func (l *Launcher) Name() string { return "kubernetes" }

// KeepsRuns implements runner.Launcher: a sandbox runs on when agentbot
// stops, and the next start re-attaches it.
func (l *Launcher) KeepsRuns() bool { return true }

// Close implements runner.Launcher: it detaches every run (their sandboxes
// go on, for the next start to re-attach) and returns when every run's
// loop and claim watcher has returned.
func (l *Launcher) Close() error {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.endLife()
	l.wg.Wait()
	return nil
}

// claimRef is "namespace/name" for errors and logs.
func (l *Launcher) claimRef(name string) string { return l.cfg.Namespace + "/" + name }

// Start implements runner.Launcher: it creates the task's SandboxClaim (or
// finds the one a crashed predecessor created), waits until the sandbox is
// Ready and starts `agent-runner run` in it with job on stdin.
//
// ctx bounds the claim's creation and the wait for it to be Ready; the run
// then streams until agent-runner exits, Stop, Detach or Close. Detach and
// Close leave agent-runner running in the pod (Attach resumes it); Stop or
// Cleanup end the sandbox.
func (l *Launcher) Start(ctx context.Context, job runner.Job) (runner.Run, error) {
	if job.TaskID == "" {
		return nil, errors.New("kubernetes launcher: job has no task id")
	}
	if l.isClosed() {
		return nil, fmt.Errorf("kubernetes launcher: task %s: %w", job.TaskID, errClosed)
	}
	job, err := l.withGateway(job)
	if err != nil {
		return nil, fmt.Errorf("kubernetes launcher: task %s: %w", job.TaskID, err)
	}
	payload, err := json.Marshal(job)
	if err != nil {
		return nil, fmt.Errorf("kubernetes launcher: task %s: encode job: %w", job.TaskID, err)
	}
	name := ClaimName(job.TaskID)
	log := l.log.With("task_id", job.TaskID, "repo", job.Repo, "claim", name)

	claim, createdAt, err := l.ensureClaim(ctx, log, job, name)
	if err != nil {
		return nil, err
	}
	claim, err = l.waitReady(ctx, name)
	if err != nil {
		l.countFailure(err)
		var cfgErr *ConfigError
		if errors.As(err, &cfgErr) {
			// Nothing will ever run in this claim; do not leave it waiting
			// for its shutdownTime.
			if derr := l.deleteClaim(context.WithoutCancel(ctx), name); derr != nil {
				log.Warn("delete misconfigured claim", "err", derr)
			}
		}
		return nil, fmt.Errorf("task %s: %w", job.TaskID, err)
	}
	pod := claim.Status.SandboxStatus.Name
	start := "cold"
	if pod != claim.Name {
		start = "warm"
	}
	attrs := []any{"pod", pod, "start", start}
	if !createdAt.IsZero() {
		// From before the create request (its wait for the rate limiter
		// included) to the Ready condition.
		ready := time.Since(createdAt).Seconds()
		l.metrics.timeToReady.WithLabelValues(start).Observe(ready)
		attrs = append(attrs, "ready_seconds", ready)
	}
	log.Info("sandbox ready", attrs...)

	r, err := l.follow(job.TaskID, name, pod, log, l.runCommand(), payload, 0)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (l *Launcher) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

// Attach implements runner.Launcher: it finds the task's claim and pod and
// resumes the events after fromSeq with `agent-runner attach`. It returns an
// error wrapping runner.ErrGone when the claim, its pod or its readiness is
// gone.
func (l *Launcher) Attach(ctx context.Context, taskID string, fromSeq int) (runner.Run, error) {
	if l.isClosed() {
		return nil, fmt.Errorf("kubernetes launcher: task %s: %w", taskID, errClosed)
	}
	name := ClaimName(taskID)
	ref := l.claimRef(name)
	log := l.log.With("task_id", taskID, "claim", name)
	claim, err := l.claims.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("task %s: claim %s not found: %w", taskID, ref, runner.ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("task %s: get claim %s: %w", taskID, ref, err)
	}
	if claim.DeletionTimestamp != nil {
		return nil, fmt.Errorf("task %s: claim %s is being deleted: %w", taskID, ref, runner.ErrGone)
	}
	if serr := l.sandboxFailure(ctx, claim); serr != nil {
		return nil, fmt.Errorf("task %s: %w: %w", taskID, runner.ErrGone, serr)
	}
	if !claimReady(claim) {
		// The bot stopped before the sandbox was ready, so agent-runner was
		// never started in it.
		return nil, fmt.Errorf("task %s: claim %s was never ready (%s): %w", taskID, ref, readyReason(claim), runner.ErrGone)
	}
	podName := claim.Status.SandboxStatus.Name
	pod, err := l.pods.Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("task %s: pod %s/%s of claim %s not found: %w", taskID, l.cfg.Namespace, podName, ref, runner.ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("task %s: get pod %s/%s: %w", taskID, l.cfg.Namespace, podName, err)
	}
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return nil, fmt.Errorf("task %s: pod %s/%s is %s: %w", taskID, l.cfg.Namespace, podName, podState(pod), runner.ErrGone)
	}
	log.Info("re-attaching", "pod", podName, "from_seq", fromSeq)
	r, err := l.follow(taskID, name, podName, log, l.attachCommand(fromSeq), nil, fromSeq)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Cleanup implements runner.Launcher: it deletes the task's claim, and the
// garbage collector removes its Sandbox, Pod, Service and volumes. With keep
// the claim stays for debugging until its shutdownTime backstop removes it.
func (l *Launcher) Cleanup(ctx context.Context, taskID string, keep bool) error {
	name := ClaimName(taskID)
	if keep {
		l.log.Info("keeping sandbox for debugging until its shutdown time", "task_id", taskID, "claim", name)
		return nil
	}
	if err := l.deleteClaim(ctx, name); err != nil {
		return fmt.Errorf("task %s: %w", taskID, err)
	}
	return nil
}

func (l *Launcher) runCommand() []string {
	return []string{l.cfg.AgentRunner, "run", "--workspace", l.cfg.Workspace}
}

func (l *Launcher) attachCommand(fromSeq int) []string {
	return []string{l.cfg.AgentRunner, "attach", "--workspace", l.cfg.Workspace, "--from", strconv.Itoa(fromSeq)}
}

func (l *Launcher) bundleCommand() []string {
	return []string{l.cfg.AgentRunner, "bundle", "--workspace", l.cfg.Workspace}
}

// ensureClaim creates the claim of job, or returns the existing one when a
// previous bot process created it already. createdAt is zero when the claim
// already existed.
func (l *Launcher) ensureClaim(ctx context.Context, log *slog.Logger, job runner.Job, name string) (*extv1beta1.SandboxClaim, time.Time, error) {
	ref := l.claimRef(name)
	limit := time.Duration(job.TimeLimit)
	if limit <= 0 {
		limit = DefaultTimeLimit
	}
	// Whole seconds: the field is RFC 3339 without fractions on the wire.
	shutdown := metav1.NewTime(time.Now().Add(limit + l.cfg.GracePeriod).Truncate(time.Second))
	want := &extv1beta1.SandboxClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: l.cfg.Namespace,
			Labels: map[string]string{
				LabelManagedBy: ManagedByValue,
				LabelTaskID:    labelValue(job.TaskID),
				LabelRepo:      labelValue(job.Repo),
			},
			Annotations: map[string]string{
				AnnotationTaskID: job.TaskID,
				AnnotationRepo:   job.Repo,
			},
		},
		Spec: extv1beta1.SandboxClaimSpec{
			WarmPoolRef: extv1beta1.SandboxWarmPoolRef{Name: l.cfg.WarmPool},
			Lifecycle: &extv1beta1.Lifecycle{
				ShutdownTime:   &shutdown,
				ShutdownPolicy: extv1beta1.ShutdownPolicyDelete,
			},
		},
	}
	// A claim of the same name that is still being deleted (a previous
	// attempt's) must vanish before the new one can be created; two rounds
	// cover the race where it disappears between Create and Get.
	for range 3 {
		createdAt := time.Now()
		created, err := l.claims.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			log.Info("claim created", "warm_pool", l.cfg.WarmPool, "shutdown_time", shutdown.UTC().Format(time.RFC3339))
			return created, createdAt, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, time.Time{}, fmt.Errorf("task %s: create claim %s: %w", job.TaskID, ref, err)
		}
		existing, err := l.claims.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("task %s: get existing claim %s: %w", job.TaskID, ref, err)
		}
		if owner := existing.Annotations[AnnotationTaskID]; owner != job.TaskID {
			return nil, time.Time{}, fmt.Errorf("task %s: claim %s already exists for task %q", job.TaskID, ref, owner)
		}
		if existing.DeletionTimestamp == nil {
			serr := l.sandboxFailure(ctx, existing)
			if serr == nil {
				// Created before a crash; agent-runner resets the
				// workspace when it starts.
				log.Info("claim already exists; using it")
				return existing, time.Time{}, nil
			}
			// A previous attempt's sandbox that ended: start afresh.
			log.Info("replacing the claim of a previous attempt", "reason", serr.Reason)
			if err := l.deleteClaim(ctx, name); err != nil {
				return nil, time.Time{}, fmt.Errorf("task %s: %w", job.TaskID, err)
			}
		}
		log.Info("waiting for the previous claim to be deleted")
		if err := l.waitGone(ctx, name); err != nil {
			return nil, time.Time{}, fmt.Errorf("task %s: %w", job.TaskID, err)
		}
	}
	return nil, time.Time{}, fmt.Errorf("task %s: claim %s keeps reappearing", job.TaskID, ref)
}

// deleteClaim deletes the claim in the background; the garbage collector
// removes what it owns. A claim that is already gone is fine.
func (l *Launcher) deleteClaim(ctx context.Context, name string) error {
	policy := metav1.DeletePropagationBackground
	err := l.claims.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete claim %s: %w", l.claimRef(name), err)
	}
	if err == nil {
		l.log.Info("claim deleted", "claim", name)
	}
	return nil
}

func (l *Launcher) countFailure(err error) {
	var cfgErr *ConfigError
	var sbErr *SandboxError
	switch {
	case errors.As(err, &cfgErr):
		l.metrics.claimFailures.WithLabelValues(failureReason(cfgErr.Reason)).Inc()
	case errors.As(err, &sbErr):
		l.metrics.claimFailures.WithLabelValues(failureReason(sbErr.Reason)).Inc()
	}
}
