package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"go.uber.org/zap"
)

var (
	errLeaseExpired = errors.New("broker: leader lease ran out before a renewal succeeded")
	errShutdown     = errors.New("broker: shutting down")
)

// elector is the lease: it campaigns for the leader lock, takes a fencing
// epoch, renews the lock, ends the term when the lease runs out, and runs
// the leader's work (termWork) for as long as the term lasts.
type elector struct {
	*core
	rep      *replica
	work     termWork
	term     atomic.Pointer[term]
	leaderID atomic.Pointer[string] // last leader seen in Redis
	epoch    atomic.Int64           // last epoch seen
	maxEpoch atomic.Int64           // highest epoch seen (epoch.go)
}

// termWork is the leader's work, as the elector runs it.
type termWork interface {
	begin(t *term) // a term was won: set up its work (before it is current)
	run(t *term)   // do the work until t.ctx ends
	end()          // the term is over: forget what only a leader knows
}

// current is the live term, nil when this replica does not lead.
func (b *elector) current() *term {
	t := b.term.Load()
	if t == nil || t.ctx.Err() != nil {
		return nil
	}
	return t
}

// term is one leadership: from obtaining the lock to losing or releasing it.
// Its ctx is the one leader context: cancelling it stops the scheduler and
// every refresh in flight.
type term struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	lock   *redislock.Lock
	fence  fence
	epoch  int64
	lease  lease
	// work is what the term's work attaches to it (leaderWork: its
	// *scheduler, read with sched); the lease does not look into it.
	work any
}

func (t *term) stop(cause error) { t.cancel(cause) }

// lease tracks how long the lock is surely ours: the time a successful
// obtain or renewal was sent, plus lock_ttl, minus a margin. It uses the
// monotonic clock, never the injected one, because Redis expires the lock in
// real time.
type lease struct {
	base     time.Time
	deadline atomic.Int64 // nanoseconds since base
}

func (l *lease) extend(sent time.Time, validFor time.Duration) {
	l.deadline.Store(int64(sent.Sub(l.base) + validFor))
}

func (l *lease) remaining() time.Duration {
	return time.Duration(l.deadline.Load()) - time.Since(l.base)
}

// leaseValidity is lock_ttl minus a safety margin for clock drift and the
// time between Redis applying the TTL and us reading the answer.
func (b *elector) leaseValidity() time.Duration {
	ttl := b.cfg.Leader.LockTTL
	return ttl - min(ttl/10, time.Second)
}

// elect runs the election loop until ctx ends: try to obtain the lock, lead
// while it holds, and otherwise try again every renew_interval (or as soon as
// the current holder's lock expires).
func (b *elector) elect(ctx context.Context) {
	for ctx.Err() == nil {
		t, wait, err := b.campaign(ctx)
		if err != nil && ctx.Err() == nil {
			b.log.Debug("leader election attempt failed", zapErr(err))
		}
		if t != nil {
			b.lead(ctx, t)
			wait = b.cfg.Leader.RenewInterval / 4
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// campaign tries once to become leader. It returns the new term, or how long
// to wait before the next attempt.
func (b *elector) campaign(ctx context.Context) (*term, time.Duration, error) {
	renew := b.cfg.Leader.RenewInterval
	wait := renew + time.Duration(rand.Int64N(int64(renew/10)+1))
	cctx, cancel := context.WithTimeout(ctx, max(renew, time.Second))
	defer cancel()
	sent := time.Now()
	lock, err := b.store.obtainLock(cctx, b.id, b.cfg.Leader.LockTTL)
	if errors.Is(err, redislock.ErrNotObtained) {
		b.setRedis(nil)
		b.observeLeader(cctx)
		// Try again right after the holder's lock would expire, so a crashed
		// leader is replaced within lock_ttl plus a moment.
		if pttl, err := b.store.lockTTL(cctx); err == nil && pttl > 0 && pttl+20*time.Millisecond < wait {
			wait = pttl + 20*time.Millisecond
		}
		return nil, wait, nil
	}
	b.setRedis(err)
	if err != nil {
		return nil, wait, fmt.Errorf("obtain leader lock: %w", err)
	}
	release := func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer rcancel()
		_ = b.store.releaseLock(rctx, lock)
	}
	// Redis lost its data when the epoch key is gone (or, below, when INCR
	// does not go past the highest epoch known): a previous leader may still
	// believe in its lease, so wait it out before leading (lostlease.go).
	// Waiting before the epoch is taken lets the other replicas tell this
	// lock from a leader's.
	waited := false
	if b.maxEpoch.Load() > 0 && b.epochLost(cctx) {
		if sent, err = b.waitOutLostLease(ctx, lock, sent); err != nil {
			release()
			return nil, wait, err
		}
		waited = true
		cctx, cancel = context.WithTimeout(ctx, max(renew, time.Second))
		defer cancel()
	}
	epoch, moved, err := b.takeEpoch(cctx, lock.Token()+lock.Metadata())
	if err != nil {
		release()
		return nil, wait, err
	}
	if moved && !waited {
		if sent, err = b.waitOutLostLease(ctx, lock, sent); err != nil {
			release()
			return nil, wait, err
		}
		cctx, cancel = context.WithTimeout(ctx, max(renew, time.Second))
		defer cancel()
	}
	// Under Sentinel, wait (briefly) for a replica to have the lock and the
	// epoch; on a single node WAIT answers 0 after the timeout, which is fine.
	b.store.waitReplica(cctx)
	// The new leader starts from what Redis holds, not from a cache that may
	// lag behind the previous leader's last writes.
	if err := b.rep.reconcile(cctx); err != nil {
		release()
		return nil, wait, err
	}
	tctx, tcancel := context.WithCancelCause(ctx)
	t := &term{
		ctx: tctx, cancel: tcancel, lock: lock, epoch: epoch,
		fence: fence{lockValue: lock.Token() + lock.Metadata(), epoch: epochString(epoch)},
		lease: lease{base: sent},
	}
	t.lease.extend(sent, b.leaseValidity())
	b.work.begin(t)
	return t, wait, nil
}

// lead runs one term: renewal, the lease watchdog and the scheduler, until
// the term's context ends; then it releases the lock.
func (b *elector) lead(ctx context.Context, t *term) {
	id := b.id
	b.leaderID.Store(&id)
	b.epoch.Store(t.epoch)
	b.term.Store(t)
	b.m.Leader.Set(1)
	b.m.LeaderEpoch.Set(float64(t.epoch))
	b.m.LeaderTransitions.Inc()
	b.log.Info("became leader", zap.Int64("epoch", t.epoch), zap.String("instance_id", b.id))

	stop := context.AfterFunc(ctx, func() { t.stop(errShutdown) })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { b.renew(t) })
	wg.Go(func() { b.watchdog(t) })
	wg.Go(func() { b.work.run(t) })
	<-t.ctx.Done()
	if ctx.Err() == nil && !errors.Is(context.Cause(t.ctx), errShutdown) {
		// The lock may live on a master that failed over: route the
		// release and the next campaign by a fresh slot map.
		b.reloadClusterState("lost leadership")
	}
	b.term.CompareAndSwap(t, nil)
	b.m.Leader.Set(0)
	wg.Wait()
	b.work.end()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	err := b.store.releaseLock(rctx, t.lock)
	cancel()
	b.m.LeaderTransitions.Inc()
	cause := context.Cause(t.ctx)
	if ctx.Err() != nil || errors.Is(cause, errShutdown) {
		b.log.Info("released leadership", zap.Int64("epoch", t.epoch), zap.Bool("released", err == nil))
		return
	}
	b.log.Warn("lost leadership", zap.Int64("epoch", t.epoch), zap.NamedError("cause", cause))
}

// renew extends the lock every renew_interval; a failed renewal ends the term.
func (b *elector) renew(t *term) {
	tk := time.NewTicker(b.cfg.Leader.RenewInterval)
	defer tk.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tk.C:
		}
		sent := time.Now()
		rem := t.lease.remaining()
		if rem <= 0 {
			t.stop(errLeaseExpired)
			return
		}
		rctx, cancel := context.WithTimeout(t.ctx, rem)
		err := b.store.renewLock(rctx, t.lock, b.cfg.Leader.LockTTL,
			redislock.LimitRetry(redislock.LinearBackoff(b.cfg.Leader.RenewInterval/10), 3))
		cancel()
		if err != nil {
			if t.ctx.Err() == nil {
				b.setRedis(err)
				t.stop(fmt.Errorf("renew leader lock: %w", err))
			}
			return
		}
		t.lease.extend(sent, b.leaseValidity())
	}
}

// watchdog ends the term when the local lease deadline passes, even while a
// renewal is stuck in a Redis call that does not honour its context.
func (b *elector) watchdog(t *term) {
	timer := time.NewTimer(t.lease.remaining())
	defer timer.Stop()
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-timer.C:
		}
		rem := t.lease.remaining()
		if rem <= 0 {
			t.stop(errLeaseExpired)
			return
		}
		timer.Reset(rem)
	}
}

// observeLeader records who holds the lock and the current epoch, for Status.
func (b *elector) observeLeader(ctx context.Context) {
	id, epoch, err := b.store.readLeader(ctx)
	if err != nil {
		b.loss.held() // the holder may be a leader
		return
	}
	b.leaderID.Store(&id)
	if epoch == 0 {
		// No epoch key: Redis lost its data and nobody has led since; the
		// holder is a candidate waiting out a lost lease, not a leader.
		return
	}
	b.loss.held()
	b.epoch.Store(epoch)
	b.m.LeaderEpoch.Set(float64(b.noteEpoch(epoch)))
}
