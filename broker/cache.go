package broker

import (
	"sync"
	"sync/atomic"

	"github.com/wxbroker/wxbroker/config"
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

// appEntry is one configured app of one catalog: its configuration, its
// access token and its tickets. Immutable; a reload builds a new entry that
// shares the items.
type appEntry struct {
	ns      string
	appid   string
	app     *config.App // secret and token mode as configured now
	token   *item
	tickets map[string]*item // ticket type ("jsapi", "wx_card") → item
}

// item is one credential of one app (access token or a ticket type), as this
// replica's cache holds it. Reads load cur atomically; updates go through
// apply, which keeps them ordered by the Redis write revision.
type item struct {
	// app is the item's entry in the current catalog (catalog.adopt).
	app   atomic.Pointer[appEntry]
	ns    string
	appid string
	kind  string // KindAccessToken, KindJSAPITicket, KindWxCardTicket
	typ   string // ticket type for getticket; empty for the access token
	field string // hash field in {p}:ns:<ns>:tok and :st

	cur    atomic.Pointer[record]
	prev   atomic.Pointer[record]        // the token cur replaced (AppByToken overlap)
	status atomic.Pointer[refreshStatus] // last status written by this replica as leader
	// verdict is the last "WeChat still accepts this reported token" answer
	// this replica reached or heard of (access tokens only).
	verdict atomic.Pointer[verdict]

	mu      sync.Mutex    // serialises apply
	changed chan struct{} // closed and replaced on every applied update
}

func newItem(e *appEntry, kind, typ string) *item {
	it := &item{
		ns:      e.ns,
		appid:   e.appid,
		kind:    kind,
		typ:     typ,
		field:   e.appid + "/" + kind,
		changed: make(chan struct{}),
	}
	it.app.Store(e)
	return it
}

// config is the item's app as configured now (a reload may change it).
func (it *item) config() *config.App { return it.app.Load().app }

// spec is the item's Kind: the access token's follows the app's token_mode.
func (it *item) spec() Kind {
	if it.kind == KindAccessToken {
		return tokenKind(it.config().TokenMode)
	}
	k, _ := ticketKind(it.typ)
	return k
}

// needed is the item whose value this one is fetched with, nil for none.
func (it *item) needed() *item {
	if it.spec().Needs() == "" {
		return nil
	}
	return it.app.Load().token
}

// dependents are the items fetched with this one's value.
func (it *item) dependents() map[string]*item {
	if it.kind != KindAccessToken {
		return nil
	}
	return it.app.Load().tickets
}

// changes returns a channel closed at the next applied update.
func (it *item) changes() <-chan struct{} {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.changed
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
	if it.kind == KindAccessToken && (old == nil || old.Value != r.Value) {
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
