package kubetest

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
)

// Kubelet stands in for the kubelet of the environment's one node: there is
// no container runtime here, so it binds every new pod to the node and marks
// it Running and Ready with a pod IP, as a scheduler and a kubelet do once
// the containers started; it finishes the graceful deletion of pods, and
// serves pods/exec with the kubelet's streaming code and the LocalExecutor
// of the pod's namespace. Failed pods stay failed, like the real thing.
type Kubelet struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	queue   workqueue.TypedRateLimitingInterface[string]
	stopCh  chan struct{}
	wg      sync.WaitGroup

	streaming *httptest.Server

	mu       sync.Mutex
	nextIP   int
	onGone   []func(namespace, name string)
	runtimes map[string]*LocalExecutor // namespace → its container runtime
}

func newKubelet(client kubernetes.Interface) *Kubelet {
	factory := informers.NewSharedInformerFactory(client, 0)
	return &Kubelet{
		client:  client,
		factory: factory,
		pods:    factory.Core().V1().Pods().Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubetest-kubelet"}),
		stopCh:   make(chan struct{}),
		runtimes: map[string]*LocalExecutor{},
	}
}

func (k *Kubelet) start(ctx context.Context) error {
	if err := k.startStreaming(ctx); err != nil {
		return err
	}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = k.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				k.gone(p.Namespace, p.Name)
			}
		},
	})
	k.factory.Start(k.stopCh)
	const workers = 2
	for range workers {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			for k.work() {
			}
		}()
	}
	return nil
}

func (k *Kubelet) stop() {
	close(k.stopCh)
	k.queue.ShutDown()
	k.wg.Wait()
	k.factory.Shutdown()
	if k.streaming != nil {
		k.streaming.Close()
	}
}

func (k *Kubelet) setRuntime(namespace string, x *LocalExecutor) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if x == nil {
		delete(k.runtimes, namespace)
		return
	}
	k.runtimes[namespace] = x
}

func (k *Kubelet) runtime(namespace string) *LocalExecutor {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runtimes[namespace]
}

// OnPodGone registers f to be called when a pod is deleted or failed: its
// "containers" are gone. LocalExecutor uses it to kill the processes it runs
// for the pod.
func (k *Kubelet) OnPodGone(f func(namespace, name string)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.onGone = append(k.onGone, f)
}

func (k *Kubelet) gone(namespace, name string) {
	k.mu.Lock()
	hooks := append([]func(string, string){}, k.onGone...)
	k.mu.Unlock()
	for _, f := range hooks {
		f(namespace, name)
	}
}

func (k *Kubelet) work() bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(key); err != nil {
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// sync marks the pod of key Running and Ready unless it is already, has
// ended or is being deleted.
func (k *Kubelet) sync(key string) error {
	obj, exists, err := k.pods.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	ctx := context.Background()
	pods := k.client.CoreV1().Pods(pod.Namespace)
	if pod.DeletionTimestamp != nil {
		// The containers are stopped; confirm the deletion, as a kubelet
		// does at the end of the grace period.
		k.gone(pod.Namespace, pod.Name)
		zero := int64(0)
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		return nil
	}
	if pod.Spec.NodeName == "" {
		// Scheduling: the update that follows brings the pod back here.
		err := pods.Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
		}, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" {
		return nil
	}
	pod = pod.DeepCopy()
	now := metav1.Now()
	ip := k.allocIP()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
	}
	started := true
	for i, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name:        c.Name,
			Image:       c.Image,
			ImageID:     c.Image,
			ContainerID: fmt.Sprintf("kubetest://%s-%d", pod.UID, i),
			Ready:       true,
			Started:     &started,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (k *Kubelet) allocIP() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nextIP++
	n := k.nextIP
	return fmt.Sprintf("10.244.%d.%d", (n/250)%250, n%250+1)
}

// FailPod marks a pod Failed with reason and message, its containers
// terminated with exit code 137, as a kubelet does when a pod is evicted or
// killed; the pod's processes are gone.
func (k *Kubelet) FailPod(ctx context.Context, namespace, name, reason, message string) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		pod.Status.Phase = corev1.PodFailed
		pod.Status.Reason = reason
		pod.Status.Message = message
		for i := range pod.Status.Conditions {
			switch pod.Status.Conditions[i].Type {
			case corev1.PodReady, corev1.ContainersReady:
				pod.Status.Conditions[i].Status = corev1.ConditionFalse
				pod.Status.Conditions[i].LastTransitionTime = now
			}
		}
		for i := range pod.Status.ContainerStatuses {
			cs := &pod.Status.ContainerStatuses[i]
			startedAt := now
			if cs.State.Running != nil {
				startedAt = cs.State.Running.StartedAt
			}
			cs.Ready = false
			started := false
			cs.Started = &started
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "Error", StartedAt: startedAt, FinishedAt: now,
				ContainerID: cs.ContainerID,
			}}
		}
		_, err = k.client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("kubetest: fail pod %s/%s: %w", namespace, name, err)
	}
	k.gone(namespace, name)
	return nil
}
