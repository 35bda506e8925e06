package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/bsm/redislock"
	"go.uber.org/zap"
)

// When Redis loses its data (a restart without persistence, a failover to a
// replica that missed the last writes) the lock vanishes while the leader
// that held it still believes in its lease until its next renewal fails or
// its local deadline passes. A candidate that obtains the lock then could
// lead next to it. So a candidate that finds Redis lost its data (the epoch
// key is gone although this replica has seen one, or takeEpoch had to move
// the epoch past the highest it knew) keeps the lock but leads only once
// every earlier lease must have ended.
//
// Any earlier lease ends at most lock_ttl after its last successful renewal
// was sent. That renewal reached Redis before Redis lost the data, so before
// this replica saw the first Redis error following its last sight of the
// lock held by someone else, and in any case before this obtain was sent.

// epochLost reports whether the epoch key is missing (a failed read counts as
// not missing: takeEpoch decides then).
func (b *elector) epochLost(ctx context.Context) bool {
	missing, err := b.store.epochMissing(ctx)
	return err == nil && missing
}

// waitOutLostLease holds lock, renewing it every renew_interval, until any
// lease granted before Redis lost its data must have ended. It returns when
// the last renewal (or the obtain) was sent, to start the new lease from.
func (b *elector) waitOutLostLease(ctx context.Context, lock *redislock.Lock, sent time.Time) (time.Time, error) {
	until := b.loss.previousLeaseEnd(sent, b.cfg.Leader.LockTTL)
	b.log.Warn("obtained the leader lock after redis lost its data; waiting for any previous leader's lease to end before leading",
		zap.Duration("wait", time.Until(until)), zap.String("instance_id", b.id))
	renew := b.cfg.Leader.RenewInterval
	last := sent
	for {
		rem := time.Until(until)
		if rem <= 0 {
			return last, nil
		}
		if !sleepCtx(ctx, min(rem, renew)) {
			return last, ctx.Err()
		}
		if time.Since(last) < renew {
			continue
		}
		s := time.Now()
		rctx, cancel := context.WithTimeout(ctx, renew)
		err := b.store.renewLock(rctx, lock, b.cfg.Leader.LockTTL, nil)
		cancel()
		b.setRedis(err)
		if err != nil {
			return last, fmt.Errorf("renew leader lock while waiting out a lost lease: %w", err)
		}
		last = s
	}
}
