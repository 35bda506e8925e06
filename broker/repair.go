package broker

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// restorer writes back, on the leader, what Redis lost: a valid cached
// record that Redis no longer holds, or holds in an older version (a Redis
// restarted without persistence, a Sentinel failover to a replica that
// missed the last writes). It writes through the refresher's one write path.
type restorer struct {
	*core
	rep *replica
	r   *refresher
}

// reseed runs when a term begins: it reads every record from Redis and
// repairs those older than the cache (see repair).
func (b *restorer) reseed(t *term) {
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	defer cancel()
	stored, err := b.rep.load(ctx)
	if err != nil {
		return
	}
	b.repair(t, stored)
}

// repair writes back, under term t's fence, every valid cached record that
// Redis no longer holds or holds in an older version, so that no token is
// fetched again just because Redis forgot it, and no replica that starts
// later loads a token the leader already replaced. stored is what Redis held
// (load); each item is checked again under its task lock before the write.
func (b *restorer) repair(t *term, stored map[string]map[string]string) {
	for _, it := range b.catalog().items {
		if t.ctx.Err() != nil {
			return
		}
		cur := it.cur.Load()
		if cur == nil || !b.now().Before(cur.ExpiresAt) || !olderInRedis(cur, storedRecord(stored, it)) {
			continue
		}
		k := t.sched().task(it)
		if k == nil {
			continue // removed by a reload meanwhile
		}
		if !k.acquire(t.ctx) {
			return
		}
		err := b.repairItem(t, it)
		k.release()
		if err != nil {
			b.log.Warn("cannot restore cached credential to redis", append(itemFields(it), zapErr(err))...)
			return
		}
	}
}

// repairItem rewrites it's cached record if Redis still holds an older one
// (read again: the leader may have written since the snapshot). The caller
// holds it's task lock.
func (b *restorer) repairItem(t *term, it *item) error {
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	raw, ok, err := b.store.record(ctx, it.ns, it.field)
	cancel()
	var old *record
	switch {
	case err != nil:
		return fmt.Errorf("read %s of appid %q: %w", it.kind, it.appid, err)
	case ok:
		old, _ = parseRecord(raw) // a malformed record is overwritten
	}
	cur := it.cur.Load()
	if cur == nil || !b.now().Before(cur.ExpiresAt) || !olderInRedis(cur, old) {
		return nil
	}
	if _, err := b.r.save(t, it, cur, false); err != nil {
		return err
	}
	fields := append(itemFields(it), zapTok(cur.Value), zap.Int64("generation", cur.Gen))
	if old == nil {
		b.log.Info("restored cached credential to redis", fields...)
	} else {
		b.log.Warn("redis held an older credential than the leader (lost writes); rewrote it",
			append(fields, zap.Int64("redis_generation", old.Gen), zapTokAs("redis_token_sha256", old.Value))...)
	}
	return nil
}
