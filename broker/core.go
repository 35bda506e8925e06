package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// core is what every room shares: the start-up configuration (the parts a
// reload cannot change), the store, the clock, logger and metrics, the
// current catalog, Redis's health and the tunables tests shorten. Its few
// methods only read these.
type core struct {
	cfg   *config.Config
	store *store // every Redis access
	log   *zap.Logger
	m     *metrics.Metrics
	now   func() time.Time
	id    string

	cat      atomic.Pointer[catalog] // the configured credentials; a reload swaps it
	redisErr atomic.Pointer[redisState]
	loss     lossWatch // when Redis may have lost a leader's lock (below; used by lostlease.go)
	// lastReload is when a cluster slot map reload was last logged (unix ns).
	lastReload atomic.Int64

	// Tunables; tests shorten them.
	overlap        time.Duration // assumed classic overlap after an unknown outcome
	backoffMin     time.Duration
	backoffMax     time.Duration
	tick           time.Duration // longest scheduler sleep (the clock may be injected)
	reconcileEvery time.Duration
	pollEvery      time.Duration // follower invalidation: Redis poll and request re-send
	verdictReuse   time.Duration // see verdictReuseDefault
	hooks          hooks
}

// hooks let tests stop the refresh path at chosen points.
type hooks struct {
	beforeWrite func(it *item) // called before a fenced token write
}

type redisState struct {
	err error
	at  time.Time
}

// catalog is the current set of configured credentials.
func (b *core) catalog() *catalog { return b.cat.Load() }

func (b *core) entry(ns, appid string) (*appEntry, bool) {
	return b.catalog().entry(ns, appid)
}

// setRedis records the outcome of the last Redis operation for Ready and Status.
func (b *core) setRedis(err error) {
	if err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, redis.Nil)) {
		return
	}
	if err != nil {
		b.loss.failure()
		b.reloadClusterState("redis error")
	}
	cur := b.redisErr.Load()
	if err == nil && (cur == nil || cur.err == nil) {
		return
	}
	if err != nil && cur != nil && cur.err != nil {
		return // keep the time the outage began
	}
	b.redisErr.Store(&redisState{err: err, at: b.now()})
	if err != nil {
		b.log.Warn("redis unavailable; serving cached tokens", zap.Error(err))
	} else if cur != nil {
		b.log.Info("redis available again")
	}
}

// lossWatch records, on the monotonic clock, when this replica last saw the
// lock held by another process that may lead (the epoch key exists: a
// candidate waiting out a lost lease has not taken an epoch yet) and when it
// first saw Redis fail after that.
type lossWatch struct {
	base     time.Time
	seenHeld atomic.Int64 // ns since base, +1 (0: never)
	failed   atomic.Int64 // ns since base, +1, of the first error after seenHeld (0: none)
}

func (w *lossWatch) since() int64 { return int64(time.Since(w.base)) + 1 }

// held records that the lock was found held by another process.
func (w *lossWatch) held() { w.seenHeld.Store(w.since()) }

// failure records a Redis error; only the first after the last held counts.
func (w *lossWatch) failure() {
	now := w.since()
	for {
		cur := w.failed.Load()
		if cur > w.seenHeld.Load() || w.failed.CompareAndSwap(cur, now) {
			return
		}
	}
}

// previousLeaseEnd bounds the end of any lease granted before Redis lost its
// data, given the time the obtain was sent.
func (w *lossWatch) previousLeaseEnd(sent time.Time, ttl time.Duration) time.Time {
	from := sent
	if f := w.failed.Load(); f > w.seenHeld.Load() {
		if at := w.base.Add(time.Duration(f - 1)); at.Before(from) {
			from = at
		}
	}
	return from.Add(ttl)
}
