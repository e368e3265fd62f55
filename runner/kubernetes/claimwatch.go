package kubernetes

// One list+watch of every claim the launcher manages in its namespace,
// shared by all the waits on single claims.

import (
	"context"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	extv1beta1 "sigs.k8s.io/agent-sandbox/extensions/api/v1beta1"
)

// claimRecheck bounds how long a wait relies on the shared watch alone: a
// waiter looks again at least this often, so a claim the watch cannot see
// (one without agentbot's label, or while the watch is down) is still
// followed, by GET.
const claimRecheck = 10 * time.Second

// claimCache holds the latest state of agentbot's claims from one list and
// watch (by the managed-by label), started on first use and ended with the
// launcher. A hundred running tasks are one watch on the API server, not a
// hundred, and a task's start costs no list or watch request of its own.
type claimCache struct {
	l     *Launcher
	start sync.Once

	mu     sync.Mutex
	synced bool // a list has filled claims
	claims map[string]*extv1beta1.SandboxClaim
	subs   map[string]map[chan struct{}]struct{}
}

func newClaimCache(l *Launcher) *claimCache {
	return &claimCache{l: l, claims: map[string]*extv1beta1.SandboxClaim{}, subs: map[string]map[chan struct{}]struct{}{}}
}

// subscribe returns a channel that receives a signal (coalesced, never
// blocking the watch) whenever the claim name may have changed, and the
// function that ends the subscription.
func (cc *claimCache) subscribe(name string) (<-chan struct{}, func()) {
	cc.start.Do(func() {
		// Not after Close has begun waiting for the launcher's goroutines;
		// the waits then rely on GET alone.
		cc.l.mu.Lock()
		defer cc.l.mu.Unlock()
		if cc.l.closing {
			return
		}
		cc.l.wg.Add(1)
		go func() {
			defer cc.l.wg.Done()
			cc.run(cc.l.life)
		}()
	})
	ch := make(chan struct{}, 1)
	cc.mu.Lock()
	if cc.subs[name] == nil {
		cc.subs[name] = map[chan struct{}]struct{}{}
	}
	cc.subs[name][ch] = struct{}{}
	cc.mu.Unlock()
	return ch, func() {
		cc.mu.Lock()
		delete(cc.subs[name], ch)
		if len(cc.subs[name]) == 0 {
			delete(cc.subs, name)
		}
		cc.mu.Unlock()
	}
}

// get returns the cached claim; ok is false when the cache cannot say
// (not listed yet, or the claim is not in it: created a moment ago, or
// deleted), so the caller asks the API server.
func (cc *claimCache) get(name string) (*extv1beta1.SandboxClaim, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	c, ok := cc.claims[name]
	return c, cc.synced && ok
}

// notify signals the subscribers of name, or of every claim for "".
func (cc *claimCache) notifyLocked(name string) {
	signal := func(set map[chan struct{}]struct{}) {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	if name != "" {
		signal(cc.subs[name])
		return
	}
	for _, set := range cc.subs {
		signal(set)
	}
}

// run lists and watches until ctx ends. A watch that ends (server timeout,
// expired resource version) is followed by a fresh list, so no change is
// lost; failures back off up to 5 s.
func (cc *claimCache) run(ctx context.Context) {
	selector := labels.SelectorFromSet(labels.Set{LabelManagedBy: ManagedByValue}).String()
	backoff := 100 * time.Millisecond
	pause := func(op string, err error) bool {
		if ctx.Err() != nil {
			return false
		}
		cc.l.log.Warn(op+" claims", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		return true
	}
	for ctx.Err() == nil {
		list, err := cc.l.claims.List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			if !pause("list", err) {
				return
			}
			continue
		}
		cc.mu.Lock()
		cc.claims = make(map[string]*extv1beta1.SandboxClaim, len(list.Items))
		for i := range list.Items {
			cc.claims[list.Items[i].Name] = &list.Items[i]
		}
		cc.synced = true
		cc.notifyLocked("")
		cc.mu.Unlock()

		w, err := cc.l.claims.Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: list.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			if !pause("watch", err) {
				return
			}
			continue
		}
		if cc.follow(ctx, w) {
			backoff = 100 * time.Millisecond
		}
		w.Stop()
	}
}

// follow applies w's events to the cache until the watch ends; it reports
// whether any event arrived.
func (cc *claimCache) follow(ctx context.Context, w watch.Interface) bool {
	seen := false
	for {
		select {
		case <-ctx.Done():
			return seen
		case ev, open := <-w.ResultChan():
			if !open {
				return seen
			}
			if ev.Type == watch.Error {
				// Typically 410 Gone: the resource version is too old.
				return seen
			}
			c, ok := ev.Object.(*extv1beta1.SandboxClaim)
			if !ok || c.Name == "" || (ev.Type != watch.Added && ev.Type != watch.Modified && ev.Type != watch.Deleted) {
				continue // a bookmark, or nothing a waiter needs
			}
			seen = true
			cc.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(cc.claims, c.Name)
			} else {
				cc.claims[c.Name] = c
			}
			cc.notifyLocked(c.Name)
			cc.mu.Unlock()
		}
	}
}

// watchClaim follows the one claim until cond is true or fails, or ctx
// ends. cond sees nil when the claim does not exist (any more). It starts
// from a GET and then takes the claim's state from the shared watch, as
// long as the cached claim is the one the GET found (same UID): a cache
// that has not yet seen a claim just created, or still holds the deleted
// one of the same name, is never believed; another GET settles it.
func (l *Launcher) watchClaim(ctx context.Context, name string, cond func(*extv1beta1.SandboxClaim) (bool, error)) (*extv1beta1.SandboxClaim, error) {
	changed, unsubscribe := l.claimCache.subscribe(name)
	defer unsubscribe()
	backoff := 100 * time.Millisecond
	var uid types.UID // of the claim the last GET found; "" before one
	for {
		c, ok := l.claimCache.get(name)
		if !ok || uid == "" || c.UID != uid {
			got, err := l.claims.Get(ctx, name, metav1.GetOptions{})
			switch {
			case err == nil:
				c, uid = got, got.UID
			case apierrors.IsNotFound(err):
				c = nil
			default:
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				l.log.Warn("get claim", "claim", name, "err", err)
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
		}
		if done, err := cond(c); done || err != nil {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-time.After(claimRecheck):
		}
	}
}
