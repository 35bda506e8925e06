package broker

import (
	"container/heap"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// task is the leader's schedule for one item during one term.
type task struct {
	it *item

	// Guarded by scheduler.mu.
	due     time.Time
	idx     int  // position in the heap, -1 when not queued
	running bool // a worker holds it
	again   bool // run again as soon as the worker is done

	// Owned by whoever holds lock.
	lock     chan struct{} // one refresh of this item at a time
	basedOn  int64         // revision the jitter was drawn for
	jitter   float64       // in [0, 1): where in the jitter range this record refreshes
	failures int
	pending  *record // fetched but not yet stored (Redis failed after WeChat answered)
	external string  // last token reported as invalidated outside the broker
	// stopped: retries stopped after an error retrying cannot fix (or the
	// daily quota); a reload with a new secret, or the resume route, makes
	// it due at once.
	stopped atomic.Bool
	// removed: the item left the catalog (a reload); the task is not
	// queued again.
	removed bool // guarded by scheduler.mu
	// superseded: a previous leader's call may have killed the stored token
	// (intent.go); refresh at once, whatever the record's schedule says.
	// Atomic: the term's first schedule reads it while a report may already
	// be storing a new token.
	superseded atomic.Bool
	// recoverFirst: an authorizer whose refresh token a previous leader's
	// call may have retired: recover it from the authorizer list before
	// the next call (intent.go, oprefresh.go).
	recoverFirst atomic.Bool
}

func (k *task) acquire(ctx context.Context) bool {
	select {
	case k.lock <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (k *task) release() { <-k.lock }

// scheduler refreshes every item before it expires, with jitter, at most
// refresh.concurrency at a time. It runs only on the leader, for one term.
type scheduler struct {
	b     *refresher
	t     *term
	cat   *catalog // the catalog the tasks follow (run's goroutine only)
	sem   chan struct{}
	kickc chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	tasks    map[*item]*task
	h        taskHeap
	inflight map[string]bool // forwarded reports being handled
	closed   bool            // run has returned; start nothing new
}

// sched is the term's scheduler (nil before leaderWork.begin): the term
// only carries it, so the lease's room does not depend on the leader's.
func (t *term) sched() *scheduler {
	s, _ := t.work.(*scheduler)
	return s
}

func newScheduler(b *refresher, t *term) *scheduler {
	n := b.cfg.Refresh.Concurrency
	if n <= 0 {
		n = 1
	}
	cat := b.catalog()
	s := &scheduler{
		b: b, t: t, cat: cat,
		tasks: make(map[*item]*task, len(cat.items)),
		sem:   make(chan struct{}, n),
		kickc: make(chan struct{}, 1),

		inflight: map[string]bool{},
	}
	for _, it := range cat.items {
		s.tasks[it] = newTask(it)
	}
	return s
}

func newTask(it *item) *task {
	return &task{it: it, idx: -1, lock: make(chan struct{}, 1), basedOn: -1}
}

// task returns it's task, nil when it is not scheduled (its app left the
// catalog).
func (s *scheduler) task(it *item) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[it]
}

// follow brings the tasks in line with catalog c (a reload): a task for
// every new credential, due as its record says (at once when there is none);
// none for a credential no longer configured; and a credential whose retries
// stopped runs again at once when its app's secret changed. The other
// tasks keep their schedule.
func (s *scheduler) follow(c *catalog) {
	prev := s.cat
	s.cat = c
	want := make(map[*item]bool, len(c.items))
	for _, it := range c.items {
		want[it] = true
	}
	var added []*task
	s.mu.Lock()
	for it, k := range s.tasks {
		if want[it] {
			continue
		}
		if k.idx >= 0 {
			heap.Remove(&s.h, k.idx)
		}
		k.removed = true
		delete(s.tasks, it)
	}
	for _, it := range c.items {
		if _, ok := s.tasks[it]; !ok {
			k := newTask(it)
			s.tasks[it] = k
			added = append(added, k)
		}
	}
	s.mu.Unlock()
	now := s.b.now()
	for _, k := range added {
		due := s.dueFor(k, now)
		s.mu.Lock()
		if !k.removed && !k.running && k.idx < 0 {
			k.due = due
			heap.Push(&s.h, k)
		}
		s.mu.Unlock()
	}
	for _, it := range c.items {
		old, ok := prev.entry(it.ns, it.appid)
		if ok && old.app.Secret != it.config().Secret {
			s.resume(it)
		}
	}
	s.wake()
}

// resume makes it due at once if its retries stopped, and reports whether
// they had.
func (s *scheduler) resume(it *item) bool {
	k := s.task(it)
	if k == nil || !k.stopped.Load() {
		return false
	}
	s.kick(it)
	return true
}

// run schedules every item from the cache (loaded from Redis when the term
// began) and dispatches due refreshes until the term ends.
func (s *scheduler) run() {
	defer func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.wg.Wait()
	}()
	s.b.settleIntents(s.t)
	s.b.ex.loadQuotaGauges(s.t.ctx)
	now := s.b.now()
	items := s.cat.items
	ks := make([]*task, len(items))
	dues := make([]time.Time, len(items))
	for i, it := range items {
		ks[i] = s.task(it)
		dues[i] = s.dueFor(ks[i], now)
	}
	s.mu.Lock()
	for i, k := range ks {
		if k.removed || k.idx >= 0 || k.running {
			continue
		}
		k.due = dues[i]
		heap.Push(&s.h, k)
	}
	s.mu.Unlock()

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-s.t.ctx.Done():
			return
		case <-timer.C:
		case <-s.kickc:
		}
		if c := s.b.catalog(); c != s.cat {
			s.follow(c)
		}
		now := s.b.now()
		var ready []*task
		s.mu.Lock()
		for s.h.Len() > 0 && !s.h[0].due.After(now) {
			k := heap.Pop(&s.h).(*task)
			k.running = true
			ready = append(ready, k)
		}
		wait := s.b.tick
		if s.h.Len() > 0 {
			wait = min(wait, s.h[0].due.Sub(now))
		}
		s.mu.Unlock()
		for _, k := range ready {
			select {
			case s.sem <- struct{}{}:
			case <-s.t.ctx.Done():
				return
			}
			s.wg.Go(func() {
				defer func() { <-s.sem }()
				s.runTask(k)
			})
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(wait, time.Millisecond))
	}
}

// runTask refreshes a due item (unless its record changed meanwhile and it
// is no longer due) and schedules its next run.
func (s *scheduler) runTask(k *task) {
	if !k.acquire(s.t.ctx) {
		return
	}
	now := s.b.now()
	if k.failures == 0 && k.pending == nil && !k.superseded.Load() {
		if due := s.dueFor(k, now); due.After(now) {
			k.release()
			s.requeue(k, due)
			return
		}
	}
	o := s.b.refresh(s.t, k)
	next, ok := s.next(k, o, s.b.now())
	k.release()
	if ok {
		s.requeue(k, next)
	}
}

// next turns the outcome of a refresh of k into k's next due time; false
// when the term is over. The caller holds k's lock.
func (s *scheduler) next(k *task, o outcome, now time.Time) (time.Time, bool) {
	b, it := s.b, k.it
	switch {
	case o.termOver:
		return time.Time{}, false
	case o.err == nil:
		k.stopped.Store(false)
		next := s.dueFor(k, now)
		if next.After(now) {
			k.failures = 0
			return next, true
		}
		// Still due right after a refresh: WeChat returned a token without
		// the expected lifetime (a stable token's successor not minted yet).
		k.failures++
		return now.Add(s.retryWait(it, k.failures, 0, now)), true
	case errors.Is(o.err, errLeaseShort):
		return now.Add(b.cfg.Leader.RenewInterval / 4), true
	case waiting(o.err):
		return now.Add(far), true // a new access token makes its tickets due (stored), a ticket or a grant its platform credential (oprefresh.go)
	case !o.stopUntil.IsZero():
		k.stopped.Store(true)
		return o.stopUntil, true
	}
	k.failures++
	wait := s.retryWait(it, k.failures, o.retryAfter, now)
	fields := append(itemFields(it), zapErr(o.err), zap.Int("failures", k.failures), zap.Duration("retry_in", wait))
	if cur := it.cur.Load(); cur != nil && now.Before(cur.ExpiresAt) {
		fields = append(fields, zap.Duration("cached_valid_for", cur.ExpiresAt.Sub(now)))
	}
	b.log.Warn("refresh failed; serving the cached credential while it is valid", fields...)
	b.recordStatus(s.t, it, &refreshStatus{LastError: errorInfo(o.err, now), NextAttempt: now.Add(wait)})
	return now.Add(wait), true
}

// stored is told of every record the leader wrote for it: an access token a
// credential call returned ends a previous leader's supersession, and a new
// access token value makes its tickets due at once.
func (s *scheduler) stored(it *item, fetched, newValue bool) {
	if k := s.task(it); fetched && k != nil && it.spec().Exclusive() {
		k.superseded.Store(false)
	}
	if it.kind == KindComponentToken && newValue {
		s.componentStored(it)
	}
	if it.kind != KindAccessToken || !newValue {
		return
	}
	for _, tk := range it.dependents() {
		s.kick(tk)
	}
}

// requeue puts k back in the heap at due (or at once if it was kicked while
// running).
func (s *scheduler) requeue(k *task, due time.Time) {
	s.mu.Lock()
	k.running = false
	if k.removed {
		s.mu.Unlock()
		return
	}
	if k.again {
		k.again = false
		due = s.b.now()
	}
	k.due = due
	heap.Push(&s.h, k)
	s.mu.Unlock()
	s.wake()
}

// kick makes it due now (a new access token needs new tickets).
func (s *scheduler) kick(it *item) {
	s.mu.Lock()
	k := s.tasks[it]
	switch {
	case k == nil:
	case k.running:
		k.again = true
	case k.idx >= 0:
		k.due = s.b.now()
		heap.Fix(&s.h, k.idx)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *scheduler) wake() {
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// scheduledAt is when the item's task is due, or the zero time when it is running.
func (s *scheduler) scheduledAt(it *item) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.tasks[it]
	if k == nil || k.idx < 0 {
		return time.Time{}
	}
	return k.due
}

// refreshing reports whether a worker holds the item's task right now.
func (s *scheduler) refreshing(it *item) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.tasks[it]
	return k != nil && k.running
}

// far is "not scheduled": an item waiting for something else (a ticket
// waiting for its access token) or whose retries stopped.
const far = 100 * 365 * 24 * time.Hour

// dueFor computes when k's current record needs refreshing. The caller holds
// k.lock (or k is not yet running).
func (s *scheduler) dueFor(k *task, now time.Time) time.Time {
	rec := k.it.cur.Load()
	if k.superseded.Load() {
		return now
	}
	dep := k.it.needed()
	follows := dep != nil && k.it.spec().Follows()
	var depRec *record
	if dep != nil {
		depRec = dep.cur.Load()
		if depRec == nil || !now.Before(depRec.ExpiresAt) {
			return now.Add(far) // the needed credential's refresh kicks this one (stored)
		}
	}
	if rec == nil || !now.Before(rec.ExpiresAt) {
		return now
	}
	if rec.Rev != k.basedOn {
		k.basedOn = rec.Rev
		k.jitter = rand.Float64()
	}
	r := s.b.cfg.Refresh
	life := rec.ExpiresAt.Sub(rec.FetchedAt)
	if life <= 0 {
		return now
	}
	// However short the lifetime, the refresh is due early enough that one
	// call ends before the record stops being served (minServeLife).
	latest := rec.ExpiresAt.Add(-minServeLife - s.b.cfg.WeChat.Timeout)
	due := k.it.spec().Due(r, rec.ExpiresAt, life, k.jitter, latest)
	if !follows {
		return due
	}
	// A dependent credential follows the one it is fetched with: a new
	// value there brings a new one here.
	if rec.Src != shortHash(depRec.Value) {
		return now
	}
	// When the needed credential is being refreshed right now, or is
	// replaced before this one needs refreshing anyway, the chained fetch
	// (a stored value kicks its dependents) makes this one unnecessary: wait
	// for it, but no longer than fallback. Without the first check, a
	// ticket falling due while its token's call is in flight is fetched
	// twice.
	before, _ := r.Lead(life)
	fallback := earlierOf(rec.ExpiresAt.Add(-before/2), latest)
	if s.refreshing(dep) {
		return fallback
	}
	if depDue := s.scheduledAt(dep); !depDue.IsZero() && due.Before(depDue) && depDue.Before(fallback) {
		return fallback
	}
	return due
}

// backoff is the wait after the n-th consecutive failure: exponential from
// backoffMin to backoffMax, ±20% jitter, at least least.
func (s *scheduler) backoff(n int, least time.Duration) time.Duration {
	b := s.b
	d := b.backoffMin
	for i := 1; i < n && d < b.backoffMax; i++ {
		d *= 2
	}
	d = min(d, b.backoffMax)
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return max(d, least)
}

// retryAttempts is how many attempts the retry spacing leaves room for in
// the remaining life of the cached credential.
const retryAttempts = 4

// retryWait is the wait before retrying it after its n-th consecutive
// failure. It is the exponential backoff, shortened as the cached credential
// nears its expiry so that retryAttempts attempts still fit before the last
// moment an attempt can start and still land while the credential is served:
// expiry − minServeLife − wechat.timeout (room). The spacing does not go
// below wechat.timeout, which one attempt may take, except that no retry is
// put after room: the last attempt that can still land before the serve
// floor is made. Past room, an attempt may still land in time when WeChat
// answers quickly, so retries come every wechat.timeout/retryAttempts until
// the credential expires. least (60 s after 45011) holds unless waiting that
// long would outlive room: then the one retry comes at room (past room it
// is not waited for). With nothing valid cached it is the plain backoff.
func (s *scheduler) retryWait(it *item, n int, least time.Duration, now time.Time) time.Duration {
	b := s.b
	d := s.backoff(n, 0)
	cur := it.cur.Load()
	if cur == nil || !now.Before(cur.ExpiresAt) {
		return max(d, least)
	}
	timeout := b.cfg.WeChat.Timeout
	room := cur.ExpiresAt.Sub(now) - minServeLife - timeout
	if room <= 0 {
		return min(d, max(timeout/retryAttempts, time.Millisecond))
	}
	if share := room / retryAttempts; share < d {
		d = max(share, min(timeout, d))
	}
	return min(max(d, least), room)
}

// taskHeap orders tasks by due time.
type taskHeap []*task

func (h taskHeap) Len() int           { return len(h) }
func (h taskHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h taskHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *taskHeap) Push(x any) {
	k := x.(*task)
	k.idx = len(*h)
	*h = append(*h, k)
}
func (h *taskHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	k.idx = -1
	*h = old[:len(old)-1]
	return k
}

// goForwarded runs fn for a forwarded report unless the same report is
// already being handled or the term is over.
func (s *scheduler) goForwarded(key string, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.inflight[key] {
		return
	}
	s.inflight[key] = true
	s.wg.Go(func() {
		defer func() {
			s.mu.Lock()
			delete(s.inflight, key)
			s.mu.Unlock()
		}()
		fn()
	})
}

// componentStored is told of a component token the leader stored: its
// authorizers that wait for one (none was valid when they fell due) are due
// at once; the others keep their schedule, their tokens stay valid.
func (s *scheduler) componentStored(it *item) {
	ce, ok := s.b.catalog().component(it.ns, it.appid)
	if !ok {
		return
	}
	horizon := s.b.now().Add(far / 2)
	s.mu.Lock()
	for _, a := range ce.auths {
		if k := s.tasks[a]; k != nil && k.idx >= 0 && k.due.After(horizon) {
			k.due = s.b.now()
			heap.Fix(&s.h, k.idx)
		}
	}
	s.mu.Unlock()
	s.wake()
}

// isStopped reports whether it's retries stopped (an error retrying cannot
// fix).
func (s *scheduler) isStopped(it *item) bool {
	k := s.task(it)
	return k != nil && k.stopped.Load()
}
