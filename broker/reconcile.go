package broker

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// reconcile loads every stored record from Redis into the cache (one HGETALL
// per namespace, pipelined). Missing records leave the cache alone: a token
// Redis lost stays served until it expires.
func (b *replica) reconcile(ctx context.Context) error {
	_, err := b.reconcileLoad(ctx)
	return err
}

// reconcileLoad is reconcile that also returns what Redis held.
func (b *replica) reconcileLoad(ctx context.Context) (map[string]map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Leader.LockTTL)
	defer cancel()
	stored, err := b.load(ctx)
	if err != nil {
		return nil, err
	}
	for ns, fields := range stored {
		for field, raw := range fields {
			b.applyRaw(ns, field, raw)
		}
	}
	return stored, nil
}

// refreshItem reads one item's record from Redis and applies it.
func (b *replica) refreshItem(ctx context.Context, it *item) error {
	raw, ok, err := b.store.record(ctx, it.ns, it.field)
	if !ok && err == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load %s of appid %q: %w", it.kind, it.appid, err)
	}
	b.applyRaw(it.ns, it.field, raw)
	return nil
}

// applyRaw applies a stored record named by namespace and hash field.
func (b *replica) applyRaw(ns, field, raw string) {
	it := b.itemByField(ns, field)
	if it == nil {
		return // an app no longer configured
	}
	r, err := parseRecord(raw)
	if err != nil {
		b.log.Warn("ignoring malformed record", zapNS(ns), zapApp(it.appid), zapKind(it.kind), zapErr(err))
		return
	}
	b.apply(it, r)
}

func (b *core) itemByField(ns, field string) *item {
	return b.catalog().byField(ns, field)
}

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

// load reads every namespace's records from Redis (one HGETALL each,
// pipelined): namespace → field → raw record.
func (b *replica) load(ctx context.Context) (map[string]map[string]string, error) {
	stored, err := b.store.records(ctx)
	if err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	return stored, nil
}

// olderInRedis reports whether Redis's copy of a record (nil when missing)
// is older than the cached one: missing, or written before it (lower
// revision) with a lower generation or other content. That is what a Redis
// that restarted without persistence, or a Sentinel failover to a replica
// that missed the last writes, leaves behind.
func olderInRedis(cached, stored *record) bool {
	if stored == nil {
		return true
	}
	if stored.Rev >= cached.Rev || stored.Gen > cached.Gen {
		return false
	}
	return stored.Gen < cached.Gen || stored.Value != cached.Value || !stored.ExpiresAt.Equal(cached.ExpiresAt)
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
		k := t.sched.task(it)
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

func storedRecord(stored map[string]map[string]string, it *item) *record {
	raw, ok := stored[it.ns][it.field]
	if !ok {
		return nil
	}
	r, err := parseRecord(raw)
	if err != nil {
		return nil // malformed: overwrite it
	}
	return r
}
