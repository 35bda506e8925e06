package broker

import (
	"context"
	"fmt"
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
