package broker

import (
	"sync"
	"time"
)

// replica is the cache every replica serves from: the records applied to
// the catalog's items (kept current by pub/sub and a periodic reconcile,
// and reloaded after a pause of the process), the index of access tokens
// for AppByToken and of every token handed out (gateway). Its reads never
// touch Redis.
type replica struct {
	*core
	ex     *exporter
	index  tokenIndex  // access token value → item, for AppByToken
	issued issuedIndex // every access token handed out, until its expiry (gateway)
	pause  pauseGuard  // pauses of this process, for the read path (pause.go)
	// handle serves the messages of the channels other than records
	// (forwarded reports, their outcomes, resume requests); set by New.
	handle map[channel]func(payload string)
	// reconciled is told what a periodic reconcile read from Redis (the
	// leader repairs what Redis lost); set by New.
	reconciled func(stored map[string]map[string]string)
}

func newReplica(c *core, ex *exporter) *replica {
	r := &replica{core: c, ex: ex}
	r.index.m = map[string]*item{}
	r.pause.init(c.cfg.Leader.LockTTL)
	return r
}

// apply installs r if it is newer (by revision) than the cached record and
// reports whether it did.
func (b *replica) apply(it *item, r *record) bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	old := it.cur.Load()
	if old != nil && old.Rev >= r.Rev {
		return false
	}
	it.cur.Store(r)
	if it.kind == KindAccessToken {
		b.issued.add(r.Value, it, r.ExpiresAt, b.now())
	}
	if it.spec().Exclusive() && (old == nil || old.Value != r.Value) {
		b.index.add(r.Value, it)
		if old != nil {
			if p := it.prev.Load(); p != nil && p.Value != r.Value {
				b.index.remove(p.Value, it)
			}
			it.prev.Store(old)
		}
	}
	close(it.changed)
	it.changed = make(chan struct{})
	if !it.perItemSeries() {
		return true // an authorizer: no series of its own
	}
	b.m.TokenExpiry.WithLabelValues(it.ns, it.appid, it.kind).Set(float64(r.ExpiresAt.UnixMilli()) / 1e3)
	b.ex.exportDeadline(it, r)
	if !r.FetchedAt.IsZero() {
		b.m.TokenLastRefreshSuccess.WithLabelValues(it.ns, it.appid, it.kind).Set(float64(r.FetchedAt.UnixMilli()) / 1e3)
	}
	return true
}

// tokenIndex maps access-token values to their item for AppByToken.
type tokenIndex struct {
	mu sync.RWMutex
	m  map[string]*item
}

func (x *tokenIndex) lookup(tok string) *item {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.m[tok]
}

func (x *tokenIndex) add(tok string, it *item) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.m[tok] = it
}

func (x *tokenIndex) remove(tok string, it *item) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m[tok] == it {
		delete(x.m, tok)
	}
}

// minServeLife is the least life a token or ticket must have left to be
// served: an answer with "expires_in": 0 is of no use to any client, and one
// with less than a second may die on the way.
const minServeLife = time.Second

// servable reports whether r can be served at now.
func servable(r *record, now time.Time) bool {
	return r != nil && r.ExpiresAt.Sub(now) >= minServeLife
}

// Token is an access token as served to callers.
type Token struct {
	AccessToken string
	ExpiresAt   time.Time
	// Generation counts the tokens this app has had; it grows with every new token.
	Generation int64
}

// Ticket is a JS-SDK ticket (jsapi or wx_card) as served to callers.
type Ticket struct {
	Ticket    string
	ExpiresAt time.Time
}
