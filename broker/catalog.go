package broker

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxbroker/wxbroker/config"
)

// catalog is the set of credentials this replica manages: every configured
// app of every namespace with its access token and tickets. A catalog is
// immutable once built; a reload builds the next one (newCatalog) and the
// Broker swaps it in atomically. Items of credentials that stay configured
// carry over, with their cache, from one catalog to the next.
type catalog struct {
	cfg        *config.Config
	apps       map[string]map[string]*appEntry // namespace → appid → entry
	items      []*item                         // every credential, in config order
	namespaces []string                        // configured namespaces, in order
	// comps are the Open Platform components (catalog_platform.go), with
	// their active authorizers: the part of the catalog that also changes
	// without a reload (auth).
	comps map[string]map[string]*compEntry // namespace → component appid → entry
	auth  authSet
}

// newCatalog builds the catalog of cfg, reusing prev's entries and items
// for the credentials both configure (prev may be nil), with prev's active
// authorizers. It fails only on a ticket type no kind knows
// (config.Validate refuses those first).
func newCatalog(cfg *config.Config, prev *catalog) (*catalog, error) {
	var set authSet
	if prev != nil {
		set = prev.auth
	}
	return newCatalogWith(cfg, prev, set)
}

// newCatalogWith is newCatalog with set as the active authorizers (of the
// components cfg configures).
func newCatalogWith(cfg *config.Config, prev *catalog, set authSet) (*catalog, error) {
	c := &catalog{cfg: cfg, apps: map[string]map[string]*appEntry{}}
	for _, nsName := range cfg.NamespaceNames() {
		ns := cfg.Namespaces[nsName]
		if ns == nil {
			continue
		}
		c.namespaces = append(c.namespaces, nsName)
		c.apps[nsName] = map[string]*appEntry{}
		for _, a := range ns.Apps {
			if a == nil {
				continue
			}
			var old *appEntry
			if prev != nil {
				old = prev.apps[nsName][a.AppID]
			}
			e, err := buildEntry(nsName, a, old)
			if err != nil {
				return nil, err
			}
			c.apps[nsName][a.AppID] = e
			c.items = append(c.items, e.token)
			seen := map[string]bool{}
			for _, typ := range a.Tickets {
				if it := e.tickets[typ]; it != nil && !seen[typ] {
					seen[typ] = true
					c.items = append(c.items, it)
				}
			}
		}
	}
	c.addComponents(prev, set)
	return c, nil
}

// buildEntry builds the entry of app a, keeping old's token and the tickets
// a still configures (adopt points them to the new entry). old itself is
// never changed: the catalog it belongs to stays valid for whoever still
// reads it.
func buildEntry(ns string, a *config.App, old *appEntry) (*appEntry, error) {
	e := &appEntry{ns: ns, appid: a.AppID, app: a, tickets: map[string]*item{}}
	if old != nil {
		e.token = old.token
	} else {
		e.token = newItem(e, KindAccessToken, "")
	}
	for _, typ := range a.Tickets {
		if _, ok := ticketKind(typ); !ok {
			return nil, fmt.Errorf("broker: namespace %q appid %q: unknown ticket type %q (want jsapi or wx_card)", ns, a.AppID, typ)
		}
		if _, dup := e.tickets[typ]; dup {
			continue
		}
		var it *item
		if old != nil {
			it = old.tickets[typ]
		}
		if it == nil {
			k, _ := ticketKind(typ)
			it = newItem(e, k.Name(), typ)
		}
		e.tickets[typ] = it
	}
	return e, nil
}

// adopt points every item of c to its entry in c. Called once c is the
// Broker's catalog.
func (c *catalog) adopt() {
	for _, byApp := range c.apps {
		for _, e := range byApp {
			e.token.app.Store(e)
			for _, it := range e.tickets {
				it.app.Store(e)
			}
		}
	}
	for _, byComp := range c.comps {
		for _, ce := range byComp {
			ce.app.token.app.Store(ce.app)
			for _, it := range ce.auths {
				it.app.Store(ce.app)
			}
		}
	}
}

// entry returns the entry of appid in namespace ns.
func (c *catalog) entry(ns, appid string) (*appEntry, bool) {
	e, ok := c.apps[ns][appid]
	return e, ok
}

// has reports whether it is one of c's items (its app is still configured).
func (c *catalog) has(it *item) bool {
	switch it.kind {
	case KindComponentToken:
		ce := c.comps[it.ns][it.appid]
		return ce != nil && ce.app.token == it
	case KindAuthorizerToken:
		ce := c.comps[it.ns][it.owner]
		return ce != nil && ce.auths[it.appid] == it
	}
	e, ok := c.apps[it.ns][it.appid]
	if !ok {
		return false
	}
	if it.kind == KindAccessToken {
		return e.token == it
	}
	return e.tickets[it.typ] == it
}

// byField returns the item stored under the Redis field of namespace ns,
// nil when that credential is not configured.
func (c *catalog) byField(ns, field string) *item {
	appid, kind, ok := strings.Cut(field, "/")
	if !ok {
		return nil
	}
	if it, isOp := c.platformByField(ns, appid, kind); isOp {
		return it
	}
	e, ok := c.apps[ns][appid]
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

// appEntry is one configured app of one catalog: its configuration, its
// access token and its tickets. Immutable; a reload builds a new entry that
// shares the items.
type appEntry struct {
	ns      string
	appid   string
	app     *config.App // secret and token mode as configured now
	token   *item
	tickets map[string]*item // ticket type ("jsapi", "wx_card") → item
	comp    *compEntry       // an Open Platform component's entry; nil for an app
}

// item is one credential of one app (access token or a ticket type), as this
// replica's cache holds it. Reads load cur atomically; updates go through
// apply, which keeps them ordered by the Redis write revision.
type item struct {
	// app is the item's entry in the current catalog (catalog.adopt).
	app   atomic.Pointer[appEntry]
	ns    string
	appid string
	kind  string // KindAccessToken, KindJSAPITicket, KindWxCardTicket, KindComponentToken, KindAuthorizerToken
	typ   string // ticket type for getticket; empty for the access token
	field string // hash field in {p}:ns:<ns>:tok and :st
	owner string // authorizers: their component's appid; "" otherwise

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
	switch it.kind {
	case KindAccessToken:
		return tokenKind(it.config().TokenMode)
	case KindComponentToken:
		return componentToken{}
	case KindAuthorizerToken:
		return authorizerToken{}
	}
	k, _ := ticketKind(it.typ)
	return k
}

// key names the item's subject in the intent hash and the quota and force
// counters: the appid, or "<component>:<authorizer>" for an authorizer
// (an account may be an app and an authorizer, of several components).
func (it *item) key() string {
	if it.owner != "" {
		return it.owner + ":" + it.appid
	}
	return it.appid
}

// label is the item's appid label in metrics: an authorizer counts under
// its component (no per-authorizer series).
func (it *item) label() string {
	if it.owner != "" {
		return it.owner
	}
	return it.appid
}

// perItemSeries reports whether the item has its own expiry and due
// series (every credential but an authorizer).
func (it *item) perItemSeries() bool { return it.owner == "" }

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

// verdict is WeChat's "still accepted" answer on a reported token, reached
// (or, on a follower, heard of) at time at (time.Now).
type verdict struct {
	token string
	at    time.Time
}

// Errors returned by the read and invalidation paths.
var (
	ErrUnknownApp    = errors.New("broker: unknown namespace or appid") // → 404
	ErrUnknownTicket = errors.New("broker: ticket type not configured") // → 404
	ErrNoToken       = errors.New("broker: no valid token available")   // → 503
)
