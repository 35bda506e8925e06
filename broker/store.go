package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// keys names every Redis key and channel; all share the hash tag {prefix}.
type keys struct{ p string }

func newKeys(prefix string) keys {
	if prefix == "" {
		prefix = "wxbroker"
	}
	return keys{p: "{" + prefix + "}"}
}

func (k keys) lock() string      { return k.p + ":lock" }
func (k keys) epoch() string     { return k.p + ":epoch" }
func (k keys) rev() string       { return k.p + ":rev" }
func (k keys) events() string    { return k.p + ":events" }
func (k keys) inval() string     { return k.p + ":inval" }
func (k keys) invalDone() string { return k.p + ":inval:done" }

func (k keys) tok(ns string) string    { return k.p + ":ns:" + ns + ":tok" }
func (k keys) status(ns string) string { return k.p + ":ns:" + ns + ":st" }
func (k keys) quota(ns, appid, api, day string) string {
	return k.p + ":ns:" + ns + ":quota:" + appid + ":" + api + ":" + day
}
func (k keys) force(ns, appid, day string) string {
	return k.p + ":ns:" + ns + ":force:" + appid + ":" + day
}
func (k keys) forceLast(ns, appid string) string { return k.p + ":ns:" + ns + ":forcelast:" + appid }

// record is one stored credential. Records are immutable once built.
type record struct {
	Rev       int64 // Redis write revision: orders updates across pub/sub and reconcile
	Gen       int64 // grows with every new value
	Value     string
	ExpiresAt time.Time
	FetchedAt time.Time
	Src       string // tickets: short hash of the access token they were fetched with
}

// recordTail encodes the part of a record the leader supplies; the fenced
// write script prefixes "rev\tgen\t".
func recordTail(value string, exp, at time.Time, src string) string {
	return value + "\t" + strconv.FormatInt(exp.UnixMilli(), 10) + "\t" + strconv.FormatInt(at.UnixMilli(), 10) + "\t" + src
}

func parseRecord(s string) (*record, error) {
	f := strings.Split(s, "\t")
	if len(f) != 6 {
		return nil, fmt.Errorf("malformed record: %d fields", len(f))
	}
	var n [4]int64
	for i, j := range []int{0, 1, 3, 4} {
		v, err := strconv.ParseInt(f[j], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("malformed record field %d: %w", j, err)
		}
		n[i] = v
	}
	return &record{
		Rev: n[0], Gen: n[1], Value: f[2],
		ExpiresAt: time.UnixMilli(n[2]), FetchedAt: time.UnixMilli(n[3]), Src: f[5],
	}, nil
}

// shortHash identifies a token in logs and ticket records without revealing it.
func shortHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:6])
}

// validValue reports whether a token or ticket can be stored: non-empty and
// free of the record separator.
func validValue(v string) bool {
	return v != "" && !strings.ContainsAny(v, "\t\r\n")
}

// reconcile loads every stored record from Redis into the cache (one HGETALL
// per namespace, pipelined). Missing records leave the cache alone: a token
// Redis lost stays served until it expires.
func (b *Broker) reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Leader.LockTTL)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make(map[string]*redis.MapStringStringCmd, len(b.apps))
	for ns := range b.apps {
		cmds[ns] = pipe.HGetAll(ctx, b.keys.tok(ns))
	}
	_, err := pipe.Exec(ctx)
	b.setRedis(err)
	if err != nil {
		return fmt.Errorf("load tokens: %w", err)
	}
	for ns, cmd := range cmds {
		for field, raw := range cmd.Val() {
			b.applyRaw(ns, field, raw)
		}
	}
	return nil
}

// refreshItem reads one item's record from Redis and applies it.
func (b *Broker) refreshItem(ctx context.Context, it *item) error {
	raw, err := b.rdb.HGet(ctx, b.keys.tok(it.ns), it.field).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	b.setRedis(err)
	if err != nil {
		return fmt.Errorf("load %s of appid %q: %w", it.kind, it.appid, err)
	}
	b.applyRaw(it.ns, it.field, raw)
	return nil
}

// applyRaw applies a stored record named by namespace and hash field.
func (b *Broker) applyRaw(ns, field, raw string) {
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

func (b *Broker) itemByField(ns, field string) *item {
	appid, kind, ok := strings.Cut(field, "/")
	if !ok {
		return nil
	}
	e, ok := b.entry(ns, appid)
	if !ok {
		return nil
	}
	if kind == KindAccessToken {
		return e.token
	}
	for _, it := range e.tickets {
		if it.kind == kind {
			return it
		}
	}
	return nil
}

// reseed writes back, under the new term's fence, every valid cached record
// that Redis no longer holds (Redis restarted without persistence or failed
// over to a replica that missed writes), so no token is fetched again just
// because Redis forgot it.
func (b *Broker) reseed(t *term) {
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	defer cancel()
	pipe := b.rdb.Pipeline()
	cmds := make(map[string]*redis.StringSliceCmd, len(b.apps))
	for ns := range b.apps {
		cmds[ns] = pipe.HKeys(ctx, b.keys.tok(ns))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.setRedis(err)
		return
	}
	present := map[string]bool{}
	for ns, cmd := range cmds {
		for _, f := range cmd.Val() {
			present[ns+"\t"+f] = true
		}
	}
	now := b.now()
	for _, it := range b.items {
		rec := it.cur.Load()
		if rec == nil || !now.Before(rec.ExpiresAt) || present[it.ns+"\t"+it.field] {
			continue
		}
		if _, err := b.store(t, it, rec.Value, rec.ExpiresAt, rec.FetchedAt, rec.Src); err != nil {
			b.log.Warn("cannot restore cached credential to redis", append(itemFields(it), zapErr(err))...)
			return
		}
		b.log.Info("restored cached credential to redis", append(itemFields(it), zapTok(rec.Value))...)
	}
}
