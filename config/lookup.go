package config

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
)

// App returns the app appid of namespace ns.
func (c *Config) App(ns, appid string) (*App, bool) {
	return c.Namespaces[ns].app(appid)
}

func (n *Namespace) app(appid string) (*App, bool) {
	if n == nil {
		return nil, false
	}
	for _, a := range n.Apps {
		if a != nil && a.AppID == appid {
			return a, true
		}
	}
	return nil, false
}

// AppRef is an app together with the namespace that configures it.
type AppRef struct {
	Namespace string
	App       *App
}

// Apps returns every configured app, ordered by namespace name and then by
// position in the file.
func (c *Config) Apps() []AppRef {
	var refs []AppRef
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for _, a := range ns.Apps {
			if a != nil {
				refs = append(refs, AppRef{Namespace: name, App: a})
			}
		}
	}
	return refs
}

// Allows reports whether the client may read tokens of appid in namespace
// ns: some allow pattern "namespace/appid" matches, "*" matching any part.
func (cl *Client) Allows(ns, appid string) bool {
	for _, pat := range cl.Allow {
		pns, papp, ok := strings.Cut(pat, "/")
		if ok && (pns == "*" || pns == ns) && (papp == "*" || papp == appid) {
			return true
		}
	}
	return false
}

// AllowedNamespaces returns the namespaces the client's allow patterns may reach,
// sorted; "*" stands for all of them.
func (cl *Client) AllowedNamespaces(c *Config) []string {
	set := map[string]bool{}
	for _, pat := range cl.Allow {
		pns, _, ok := strings.Cut(pat, "/")
		switch {
		case !ok:
		case pns == "*":
			return c.NamespaceNames()
		case c.Namespaces[pns] != nil:
			set[pns] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// HashKey returns the hex SHA-256 of a client key, the form clients[].key_sha256 holds.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
