package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// A replica whose process was paused (SIGSTOP, a frozen VM, heavy
// starvation) wakes up with a cache that may hold tokens WeChat has killed
// meanwhile: the pub/sub messages that replaced them are still unread in its
// socket. Reads normally cost no Redis round trip, so the replica notices the
// pause itself: a heartbeat goroutine stamps the monotonic clock every
// heartbeatEvery, and a read that finds the stamp older than pauseThreshold
// (or a gap the heartbeat noticed that no reload has covered yet) reloads
// every record from Redis first, once for all concurrent reads, bounded by
// resyncTimeout. If Redis cannot answer, the read is refused (ErrNoToken,
// 503) until a reload succeeds: after a pause the cache may be stale, and
// nothing but Redis can tell. A replica that was not paused keeps serving its
// cache while Redis is down.

const (
	heartbeatEvery = 100 * time.Millisecond
	pauseThreshold = time.Second
	// resyncRetry is how long reads are refused without a new attempt after
	// a reload after a pause failed.
	resyncRetry = 250 * time.Millisecond
)

// pauseGuard detects pauses of the process and tracks whether a reload from
// Redis has covered the last one. Times are nanoseconds since base, plus one
// (0: unset), on the monotonic clock.
type pauseGuard struct {
	base      time.Time
	threshold time.Duration
	timeout   time.Duration // resyncTimeout: bound of one reload after a pause

	beat     atomic.Int64 // last heartbeat; 0 while the heartbeat does not run
	gap      atomic.Int64 // when the last uncovered pause was noticed; 0: none
	failedAt atomic.Int64 // when the last reload after a pause failed

	mu       sync.Mutex
	inflight chan struct{} // closed when the reload in flight ends
}

func (g *pauseGuard) init(lockTTL time.Duration) {
	g.base = time.Now()
	g.threshold = pauseThreshold
	g.timeout = min(time.Second, lockTTL)
}

func (g *pauseGuard) since() int64 { return int64(time.Since(g.base)) + 1 }

// heartbeat stamps the clock until ctx ends and notes the gaps it sees.
func (b *replica) heartbeat(ctx context.Context) {
	g := &b.pause
	g.beat.Store(g.since())
	defer g.beat.Store(0)
	tk := time.NewTicker(heartbeatEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		now := g.since()
		// A read may have noticed the gap first and moved the stamp on.
		if last := g.beat.Load(); now-last > int64(g.threshold) {
			g.gap.Store(now)
			b.log.Warn("process was paused or starved; reloading from redis before serving",
				zap.Duration("gap", time.Duration(now-last)))
		}
		g.beat.Store(now)
	}
}

// suspect reports whether the cache may be stale because of a pause that no
// reload has covered yet. It is the read path's fast check: two atomic loads.
func (g *pauseGuard) suspect() bool {
	last := g.beat.Load()
	if last == 0 {
		return false // the heartbeat does not run (Run not called or ended)
	}
	if now := g.since(); now-last > int64(g.threshold) {
		// Paused, and the heartbeat has not run since: record the gap here
		// and move the stamp on, so the heartbeat does not record it again.
		g.gap.Store(now)
		g.beat.CompareAndSwap(last, now)
		return true
	}
	return g.gap.Load() != 0
}

// afterPause is called by every read before it serves from the cache. After
// a pause it reloads from Redis first (one reload for all concurrent reads)
// and returns ErrNoToken when that fails.
func (b *replica) afterPause() error {
	g := &b.pause
	if !g.suspect() {
		return nil
	}
	if f := g.failedAt.Load(); f != 0 && g.since()-f < int64(resyncRetry) {
		return fmt.Errorf("%w: cache may be stale after a pause and redis did not answer", ErrNoToken)
	}
	g.mu.Lock()
	ch := g.inflight
	if ch == nil {
		ch = make(chan struct{})
		g.inflight = ch
		go b.resyncAfterPause(ch)
	}
	g.mu.Unlock()
	timer := time.NewTimer(g.timeout + 100*time.Millisecond)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	}
	if g.gap.Load() != 0 {
		return fmt.Errorf("%w: cache may be stale after a pause and redis did not answer", ErrNoToken)
	}
	return nil
}

// resyncAfterPause reloads every record and, if the reload began after the
// last pause was noticed, marks that pause covered. It closes done at the end.
func (b *replica) resyncAfterPause(done chan struct{}) {
	g := &b.pause
	defer func() {
		g.mu.Lock()
		g.inflight = nil
		g.mu.Unlock()
		close(done)
	}()
	gap := g.gap.Load()
	start := g.since()
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	if err := b.reconcile(ctx); err != nil {
		g.failedAt.Store(g.since())
		b.log.Warn("reload from redis after a pause failed; refusing reads until it succeeds", zapErr(err))
		return
	}
	g.failedAt.Store(0)
	if gap != 0 && start >= gap {
		g.gap.CompareAndSwap(gap, 0)
	}
}
