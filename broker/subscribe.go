package broker

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribe keeps the cache current from the {p}:events channel and serves
// the invalidation channels, until ctx ends. go-redis reconnects and
// resubscribes by itself; every (re)subscription triggers a reconcile so
// nothing published during an outage is missed.
func (b *replica) subscribe(ctx context.Context) {
	ps := b.store.subscribe(ctx)
	defer ps.Close()
	// ReceiveTimeout does not always notice a cancelled ctx while it waits on
	// the connection (miniredis in dev mode); closing the PubSub ends the wait
	// so shutdown is prompt.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	const minWait, maxWait = 50 * time.Millisecond, 2 * time.Second
	wait := minWait
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, b.reconcileEvery)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Quiet channel: a ping proves the connection is alive (its
				// failure makes the next receive reconnect).
				_ = ps.Ping(ctx)
				continue
			}
			b.setRedis(err)
			if !sleepCtx(ctx, wait) {
				return
			}
			wait = min(2*wait, maxWait)
			continue
		}
		wait = minWait
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && b.store.channelOf(m.Channel) == chanEvents {
				b.setRedis(nil)
				_ = b.reconcile(ctx)
			}
		case *redis.Message:
			b.dispatch(m)
		}
	}
}

// dispatch handles one pub/sub message.
func (b *replica) dispatch(m *redis.Message) {
	switch b.store.channelOf(m.Channel) {
	case chanEvents:
		ns, rest, ok := strings.Cut(m.Payload, "\t")
		field, raw, ok2 := strings.Cut(rest, "\t")
		if ok && ok2 {
			b.applyRaw(ns, field, raw)
		}
	case chanInval, chanInvalDone, chanResume, chanPlatform:
		if h := b.handle[b.store.channelOf(m.Channel)]; h != nil {
			h(m.Payload)
		}
	}
}

// reconcileLoop reloads every record from Redis periodically: pub/sub is
// fire-and-forget, this bounds how long a missed message matters.
func (b *replica) reconcileLoop(ctx context.Context) {
	tk := time.NewTicker(b.reconcileEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		stored, err := b.reconcileLoad(ctx)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Debug("reconcile failed", zapErr(err))
			}
			continue
		}
		// The leader also repairs what Redis lost while it kept the lock
		// (a Sentinel failover to a replica that missed its last writes).
		if b.reconciled != nil {
			b.reconciled(stored)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
