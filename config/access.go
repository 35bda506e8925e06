package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Access is what one client may read, compiled from its entry in clients[]:
// the decoded digest of its key and its allow patterns as sets, so that a
// check is at most three map lookups and does not allocate. Load
// compiles it once, after validation (see Config.Compile); the API uses it as
// given. An Access is never modified after it is built, so it is safe for
// concurrent use.
type Access struct {
	// Digest is the SHA-256 of the client's key (clients[].key_sha256, decoded).
	Digest [sha256.Size]byte

	all        bool                // "*/*"
	anyApp     map[string]struct{} // "ns/*": ns
	anyNS      map[string]struct{} // "*/appid": appid
	exact      map[appKey]struct{} // "ns/appid"
	namespaces []string            // the namespaces the patterns reach, sorted
}

// appKey names one app; a comparable struct so map lookups do not allocate.
type appKey struct{ ns, appid string }

// Allows reports whether the client may read tokens of appid in namespace
// ns: some allow pattern "namespace/appid" matches, "*" matching any part.
func (a *Access) Allows(ns, appid string) bool {
	if a.all {
		return true
	}
	if _, ok := a.anyApp[ns]; ok {
		return true
	}
	if _, ok := a.anyNS[appid]; ok {
		return true
	}
	_, ok := a.exact[appKey{ns, appid}]
	return ok
}

// Namespaces returns the configured namespaces the client's allow patterns
// reach, sorted. The caller must not modify the slice.
func (a *Access) Namespaces() []string { return a.namespaces }

// OnlyNamespace returns the one namespace the client's allow patterns reach,
// or "" when they reach several (or none).
func (a *Access) OnlyNamespace() string {
	if len(a.namespaces) == 1 {
		return a.namespaces[0]
	}
	return ""
}

// splitAllow splits an allow pattern "namespace/appid"; ok is false when pat
// is not of that form. Both Validate and Compile read patterns through it.
func splitAllow(pat string) (ns, appid string, ok bool) {
	ns, appid, ok = strings.Cut(pat, "/")
	if !ok || ns == "" || appid == "" || strings.Contains(appid, "/") {
		return "", "", false
	}
	return ns, appid, true
}

// Compile builds every client's Access and keeps it in the Config, so that
// Client.Access returns it without parsing again. Load calls it
// after validation; code that builds a Config by hand may call it after
// Validate. It fails only on what Validate rejects too (a key_sha256 that is
// not 64 hex digits, a malformed allow pattern).
func (c *Config) Compile() error {
	for i := range c.Clients {
		cl := &c.Clients[i]
		a, err := c.compileAccess(cl)
		if err != nil {
			return fmt.Errorf("config: clients[%d] (%s): %w", i, cl.Name, err)
		}
		cl.access = a
	}
	return nil
}

// Access returns the client's compiled Access: the one Config.Compile built
// (Load does), or, for a Config built in code and never compiled, a
// new one built from the entry as it is now. c is the Config that holds the
// client; it names the namespaces that "*" reaches.
func (cl *Client) Access(c *Config) (*Access, error) {
	if cl.access != nil {
		return cl.access, nil
	}
	return c.compileAccess(cl)
}

func (c *Config) compileAccess(cl *Client) (*Access, error) {
	raw, err := hex.DecodeString(cl.KeySHA256)
	if err != nil || len(raw) != sha256.Size {
		return nil, errors.New("key_sha256 is not 64 hex digits")
	}
	a := &Access{
		anyApp: map[string]struct{}{},
		anyNS:  map[string]struct{}{},
		exact:  map[appKey]struct{}{},
	}
	copy(a.Digest[:], raw)
	reach := map[string]bool{}
	for _, pat := range cl.Allow {
		ns, appid, ok := splitAllow(pat)
		switch {
		case !ok:
			return nil, fmt.Errorf("allow pattern %q is not namespace/appid", pat)
		case ns == "*" && appid == "*":
			a.all = true
		case appid == "*":
			a.anyApp[ns] = struct{}{}
		case ns == "*":
			a.anyNS[appid] = struct{}{}
		default:
			a.exact[appKey{ns, appid}] = struct{}{}
		}
		switch {
		case ns == "*":
			for name := range c.Namespaces {
				reach[name] = true
			}
		case c.Namespaces[ns] != nil:
			reach[ns] = true
		}
	}
	a.namespaces = make([]string, 0, len(reach))
	for name := range reach {
		a.namespaces = append(a.namespaces, name)
	}
	sort.Strings(a.namespaces)
	return a, nil
}

// HashKey returns the hex SHA-256 of a client key, the form clients[].key_sha256 holds.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
