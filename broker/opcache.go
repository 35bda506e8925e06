package broker

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
)

// opCache is every replica's view of the Open Platform's shared state: the
// latest verify ticket and the authorizer registry of each configured
// component, kept current from {p}:op announcements (and a periodic full
// read, as records are). The active authorizers it finds are the dynamic
// part of the catalog: when they change, swap installs a catalog with the
// new set (on every replica: followers serve them, the leader's scheduler
// follows the catalog). Per authorizer it keeps one small entry (no refresh
// token: the leader reads that from Redis when it refreshes).
type opCache struct {
	*core

	mu      sync.Mutex
	comps   map[string]*opComp  // "ns\tcomponent" → state
	pending map[string]struct{} // "ns\tcomponent\tauthorizer" to read again
	wake    chan struct{}

	// swap installs a catalog with set as the active authorizers (New sets
	// it: it serialises with reloads). changed is told of an announced
	// change after it was applied (the leader acts on new grants and
	// tickets); leading reports whether this replica leads (the overdue
	// gauge). All three are set by New.
	swap    func(set authSet)
	changed func(ns, comp, authorizer string)
	leading func() bool
}

// opComp is one component's shared state as this replica last read it.
type opComp struct {
	ticket   string
	ticketAt time.Time          // the ticket's CreateTime
	az       map[string]azEntry // authorizer → entry; Seed is "1" when set (never the value)
}

func newOpCache(c *core) *opCache {
	return &opCache{core: c, comps: map[string]*opComp{}, pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// handle serves a {p}:op announcement: the change is read at once by the
// loop (announcements of a burst, an import, are read together).
func (b *opCache) handle(payload string) {
	b.mu.Lock()
	b.pending[payload] = struct{}{}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// loop applies announced changes and reads everything again every
// reconcileEvery, until ctx ends.
func (b *opCache) loop(ctx context.Context) {
	tk := time.NewTicker(b.reconcileEvery)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			if err := b.sync(ctx); err != nil && ctx.Err() == nil {
				b.log.Debug("open platform reconcile failed", zapErr(err))
			}
			b.exportOverdue()
			continue
		case <-b.wake:
		}
		b.mu.Lock()
		batch := b.pending
		b.pending = map[string]struct{}{}
		b.mu.Unlock()
		if err := b.applyPending(ctx, batch); err != nil && ctx.Err() == nil {
			b.log.Debug("open platform change not read; the next reconcile will", zapErr(err))
		}
	}
}

// applyPending reads the announced changes: a ticket (authorizer ""), or
// authorizers' entries, read together per component (a burst of refreshes
// or an import is a few round trips, never a full read per batch).
func (b *opCache) applyPending(ctx context.Context, batch map[string]struct{}) error {
	if len(batch) == 0 {
		return nil
	}
	st := opStoreOf(b.store)
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Leader.LockTTL)
	defer cancel()
	type compKey struct{ ns, comp string }
	ids := map[compKey][]string{}
	for p := range batch {
		ns, comp, a := splitOpPayload(p)
		if _, ok := b.catalog().component(ns, comp); !ok {
			continue
		}
		if a != "" {
			ids[compKey{ns, comp}] = append(ids[compKey{ns, comp}], a)
			continue
		}
		tk, at, ok, err := st.opTicket(ctx, ns, comp)
		if err != nil {
			return err
		}
		if ok {
			b.setTicket(ns, comp, tk, at)
		}
	}
	dirty := false
	for k, list := range ids {
		raw, err := st.opAuthorizersOf(ctx, k.ns, k.comp, list)
		if err != nil {
			return err
		}
		for _, a := range list {
			v, ok := raw[a]
			var e azEntry
			if ok {
				if e, err = parseAzEntry(v); err != nil {
					b.log.Warn("ignoring malformed authorizer entry", zapNS(k.ns), zapApp(k.comp), zap.String("authorizer_appid", a), zapErr(err))
					continue
				}
			}
			dirty = b.setEntry(k.ns, k.comp, a, e, ok) || dirty
		}
	}
	if dirty {
		b.install() // O(authorizers): only when a state changed, not per refresh
	}
	b.tell(batch)
	return nil
}

// tell passes applied changes on (changed).
func (b *opCache) tell(batch map[string]struct{}) {
	if b.changed == nil {
		return
	}
	for p := range batch {
		ns, comp, a := splitOpPayload(p)
		b.changed(ns, comp, a)
	}
}

func splitOpPayload(p string) (ns, comp, authorizer string) {
	ns, rest, _ := strings.Cut(p, "\t")
	comp, authorizer, _ = strings.Cut(rest, "\t")
	return ns, comp, authorizer
}

// sync reads every configured component's ticket and registry, replaces
// what this replica knew and installs the active set.
func (b *opCache) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Leader.LockTTL)
	defer cancel()
	st := opStoreOf(b.store)
	fresh := map[string]*opComp{}
	cat := b.catalog()
	for ns, byComp := range cat.comps {
		for comp := range byComp {
			raw, err := st.opAuthorizers(ctx, ns, comp)
			if err != nil {
				return err
			}
			oc := &opComp{az: make(map[string]azEntry, len(raw))}
			for a, v := range raw {
				e, err := parseAzEntry(v)
				if err != nil {
					b.log.Warn("ignoring malformed authorizer entry", zapNS(ns), zapApp(comp), zap.String("authorizer_appid", a), zapErr(err))
					continue
				}
				oc.az[a] = slim(e)
			}
			tk, at, ok, err := st.opTicket(ctx, ns, comp)
			if err != nil {
				return err
			}
			if ok {
				oc.ticket, oc.ticketAt = tk, at
			}
			fresh[ns+"\t"+comp] = oc
		}
	}
	b.mu.Lock()
	for key := range b.comps {
		if _, ok := fresh[key]; !ok {
			ns, comp, _ := strings.Cut(key, "\t")
			b.m.OpenPlatform.DropComponent(ns, comp)
		}
	}
	b.comps = fresh
	b.mu.Unlock()
	b.install()
	return nil
}

// slim drops the seed's value: the cache keeps only that there is one.
func slim(e azEntry) azEntry {
	if e.Seed != "" {
		e.Seed = "1"
	}
	return e
}

func (b *opCache) comp(ns, comp string) *opComp {
	key := ns + "\t" + comp
	oc := b.comps[key]
	if oc == nil {
		oc = &opComp{az: map[string]azEntry{}}
		b.comps[key] = oc
	}
	return oc
}

func (b *opCache) setTicket(ns, comp, tk string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	oc := b.comp(ns, comp)
	if at.Before(oc.ticketAt) {
		return
	}
	oc.ticket, oc.ticketAt = tk, at
	if _, ok := b.catalog().component(ns, comp); ok {
		b.m.OpenPlatform.VerifyTicket.WithLabelValues(ns, comp).Set(unixSeconds(at))
	}
}

// setEntry stores authorizer a's entry (ok false: it has none) and reports
// whether its state changed (the active set and the state gauges).
func (b *opCache) setEntry(ns, comp, a string, e azEntry, ok bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	oc := b.comp(ns, comp)
	old, had := oc.az[a]
	if !ok {
		delete(oc.az, a)
		return had
	}
	oc.az[a] = slim(e)
	return !had || old.State != e.State
}

// install exports the gauges and, when the active authorizers differ from
// the catalog's, swaps in a catalog with them.
func (b *opCache) install() {
	set := authSet{}
	cat := b.catalog()
	b.mu.Lock()
	for ns, byComp := range cat.comps {
		for comp := range byComp {
			oc := b.comps[ns+"\t"+comp]
			counts := map[string]int{}
			var list []string
			if oc != nil {
				for a, e := range oc.az {
					counts[e.State]++
					if e.State == StateActive {
						list = append(list, a)
					}
				}
				if !oc.ticketAt.IsZero() {
					b.m.OpenPlatform.VerifyTicket.WithLabelValues(ns, comp).Set(unixSeconds(oc.ticketAt))
				}
			}
			for _, s := range []string{metrics.AuthorizerActive, metrics.AuthorizerNeedsReauthorization, metrics.AuthorizerRevoked} {
				b.m.OpenPlatform.Authorizers.WithLabelValues(ns, comp, s).Set(float64(counts[s]))
			}
			if len(list) > 0 {
				sort.Strings(list)
				if set[ns] == nil {
					set[ns] = map[string][]string{}
				}
				set[ns][comp] = list
			}
		}
	}
	b.mu.Unlock()
	if !set.equal(cat.auth) && b.swap != nil {
		b.swap(set)
	}
}

// ticket is the latest verify ticket this replica knows for comp.
func (b *opCache) ticket(ns, comp string) (string, time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	oc := b.comps[ns+"\t"+comp]
	if oc == nil || oc.ticket == "" {
		return "", time.Time{}, false
	}
	return oc.ticket, oc.ticketAt, true
}

// entry is authorizer a's registry entry as this replica knows it (its
// Seed is "1" or "").
func (b *opCache) entry(ns, comp, a string) (azEntry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	oc := b.comps[ns+"\t"+comp]
	if oc == nil {
		return azEntry{}, false
	}
	e, ok := oc.az[a]
	return e, ok
}

// entries lists comp's registry, sorted by authorizer appid.
func (b *opCache) entries(ns, comp string) ([]string, []azEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	oc := b.comps[ns+"\t"+comp]
	if oc == nil {
		return nil, nil
	}
	ids := make([]string, 0, len(oc.az))
	for a := range oc.az {
		ids = append(ids, a)
	}
	sort.Strings(ids)
	out := make([]azEntry, len(ids))
	for i, a := range ids {
		out[i] = oc.az[a]
	}
	return ids, out
}

// exportOverdue sets wxbroker_open_platform_authorizers_overdue: on the
// leader, the active authorizers whose token is missing or past its
// refresh deadline; 0 elsewhere.
func (b *opCache) exportOverdue() {
	cat := b.catalog()
	lead := b.leading != nil && b.leading()
	now := b.now()
	for ns, byComp := range cat.comps {
		for comp, ce := range byComp {
			n := 0
			if lead {
				for _, it := range ce.auths {
					r := it.cur.Load()
					if r == nil || !now.Before(it.spec().Deadline(b.cfg.Refresh, r.ExpiresAt, r.ExpiresAt.Sub(r.FetchedAt))) {
						n++
					}
				}
			}
			b.m.OpenPlatform.Overdue.WithLabelValues(ns, comp).Set(float64(n))
		}
	}
}
