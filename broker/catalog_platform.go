package broker

import (
	"sort"
	"strings"

	"github.com/wxbroker/wxbroker/config"
)

// authSet is the active authorizers of every component: namespace →
// component appid → authorizer appids, sorted. It comes from Redis (the
// registry), not from the configuration: events, imports and recovery
// change it on every replica without a reload (opcache.go).
type authSet map[string]map[string][]string

// equal reports whether s and o hold the same authorizers.
func (s authSet) equal(o authSet) bool {
	n := 0
	for ns, comps := range s {
		for comp, list := range comps {
			if len(list) == 0 {
				continue
			}
			n++
			other := o[ns][comp]
			if len(other) != len(list) {
				return false
			}
			for i := range list {
				if list[i] != other[i] {
					return false
				}
			}
		}
	}
	m := 0
	for _, comps := range o {
		for _, list := range comps {
			if len(list) > 0 {
				m++
			}
		}
	}
	return n == m
}

// compEntry is one configured component of one catalog: its configuration,
// its component token and its active authorizers. Immutable; a new catalog
// builds a new entry that shares the items.
type compEntry struct {
	ns, appid string
	cfg       *config.Component
	// app is the component as the engine sees a subject: its appid, its
	// secret (config.App.Secret) and its token item. Every authorizer item
	// points to it too, so an authorizer's needed() is the component token.
	app   *appEntry
	auths map[string]*item // authorizer appid → item
}

// addComponents adds every component cfg configures, with the active
// authorizers set names, reusing prev's items.
func (c *catalog) addComponents(prev *catalog, set authSet) {
	c.comps = map[string]map[string]*compEntry{}
	c.auth = authSet{}
	for _, ref := range c.cfg.Components() {
		ns, comp := ref.Namespace, ref.Component
		if c.comps[ns] == nil {
			c.comps[ns] = map[string]*compEntry{}
		}
		var old *compEntry
		if prev != nil {
			old = prev.comps[ns][comp.AppID]
		}
		app := &config.App{AppID: comp.AppID, Secret: comp.Secret, TokenMode: config.ModeClassic}
		ce := &compEntry{ns: ns, appid: comp.AppID, cfg: comp, auths: map[string]*item{}}
		ce.app = &appEntry{ns: ns, appid: comp.AppID, app: app, comp: ce}
		if old != nil {
			ce.app.token = old.app.token
		} else {
			ce.app.token = newItem(ce.app, KindComponentToken, "")
		}
		c.items = append(c.items, ce.app.token)
		list := set[ns][comp.AppID]
		if len(list) > 0 {
			if c.auth[ns] == nil {
				c.auth[ns] = map[string][]string{}
			}
			c.auth[ns][comp.AppID] = list
		}
		for _, a := range list {
			var it *item
			if old != nil {
				it = old.auths[a]
			}
			if it == nil {
				it = newAuthorizerItem(ce.app, a)
			}
			ce.auths[a] = it
			c.items = append(c.items, it)
		}
		c.comps[ns][comp.AppID] = ce
	}
}

// newAuthorizerItem is the item of authorizer a of component entry e: its
// field is "<component>/<authorizer>/authorizer_access_token".
func newAuthorizerItem(e *appEntry, a string) *item {
	it := &item{
		ns:      e.ns,
		appid:   a,
		owner:   e.appid,
		kind:    KindAuthorizerToken,
		field:   e.appid + "/" + a + "/" + KindAuthorizerToken,
		changed: make(chan struct{}),
	}
	it.app.Store(e)
	return it
}

// platformByField resolves a record field of the Open Platform (appid and
// kind as byField split it); isOp is false for an app's field.
func (c *catalog) platformByField(ns, appid, kind string) (it *item, isOp bool) {
	if kind == KindComponentToken {
		if ce := c.comps[ns][appid]; ce != nil {
			return ce.app.token, true
		}
		return nil, true
	}
	a, k, ok := strings.Cut(kind, "/")
	if !ok {
		return nil, false
	}
	if k != KindAuthorizerToken {
		return nil, true
	}
	if ce := c.comps[ns][appid]; ce != nil {
		return ce.auths[a], true
	}
	return nil, true
}

// byKey returns the item whose subject key (item.key) is key: an app's or
// component's access token, or an authorizer's; nil when none.
func (c *catalog) byKey(ns, key string) *item {
	if comp, a, ok := strings.Cut(key, ":"); ok {
		if ce := c.comps[ns][comp]; ce != nil {
			return ce.auths[a]
		}
		return nil
	}
	if e, ok := c.apps[ns][key]; ok {
		return e.token
	}
	if ce := c.comps[ns][key]; ce != nil {
		return ce.app.token
	}
	return nil
}

// component returns the entry of component appid in namespace ns.
func (c *catalog) component(ns, appid string) (*compEntry, bool) {
	ce, ok := c.comps[ns][appid]
	return ce, ok
}

// componentsOf lists the components of namespace ns, sorted.
func (c *catalog) componentsOf(ns string) []string {
	out := make([]string, 0, len(c.comps[ns]))
	for appid := range c.comps[ns] {
		out = append(out, appid)
	}
	sort.Strings(out)
	return out
}

// byRef resolves the credential a forwarded report names: an app's appid
// (its access token) or an Open Platform record field.
func (c *catalog) byRef(ns, ref string) *item {
	if strings.Contains(ref, "/") {
		return c.byField(ns, ref)
	}
	if e, ok := c.apps[ns][ref]; ok {
		return e.token
	}
	return nil
}
