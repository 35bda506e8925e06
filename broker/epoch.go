package broker

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// The fencing epoch must grow with every leadership for as long as the
// deployment runs, so that wxbroker_leader_epoch names one term. INCR alone
// restarts at 1 when Redis restarts without persistence (or fails over to a
// replica that missed the INCRs). Every replica therefore remembers the
// highest epoch it has seen (its own terms, and the epoch key it reads while
// standing by), and a new leader moves the epoch past that, atomically with
// its INCR and with a check that the lock is still its own.

// takeEpoch increments the epoch for a term whose lock value is lockValue,
// moving it past the highest epoch this replica knows; moved reports that it
// had to (Redis lost its data).
func (b *elector) takeEpoch(ctx context.Context, lockValue string) (epoch int64, moved bool, err error) {
	known := b.maxEpoch.Load()
	epoch, moved, err = b.store.takeEpoch(ctx, lockValue, known)
	if err != nil {
		return 0, false, fmt.Errorf("increment epoch: %w", err)
	}
	if moved {
		b.log.Warn("redis handed out an epoch not above the highest known (redis restarted without its data or failed over); moved past it",
			zap.Int64("known_epoch", known), zap.Int64("epoch", epoch))
	}
	b.noteEpoch(epoch)
	return epoch, moved, nil
}

// noteEpoch records an epoch seen, keeping the highest; it reports the
// highest known afterwards.
func (b *elector) noteEpoch(e int64) int64 {
	for {
		cur := b.maxEpoch.Load()
		if e <= cur {
			return cur
		}
		if b.maxEpoch.CompareAndSwap(cur, e) {
			return e
		}
	}
}
