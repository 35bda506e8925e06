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

	all    bool                // "*/*"
	anyApp map[string]struct{} // "ns/*": ns
	anyNS  map[string]struct{} // "*/appid": appid
	exact  map[appKey]struct{} // "ns/appid"
	// authorizers holds the three-part patterns
	// "ns/component_appid/authorizer_appid" as written, "*" included
	// (AllowsAuthorizer).
	authorizers map[authorizerKey]struct{}
	namespaces  []string // the namespaces the patterns reach, sorted
}

// authorizerKey is a three-part allow pattern; a comparable struct so map
// lookups do not allocate.
type authorizerKey struct{ ns, component, authorizer string }

// appKey names one app; a comparable struct so map lookups do not allocate.
type appKey struct{ ns, appid string }

// Allows reports whether the client may read tokens of appid in namespace
// ns: some allow pattern "namespace/appid" matches, "*" matching any part.
// appid may be an app or an Open Platform component: "ns/component_appid"
// grants the component_access_token, the list of its authorizers and its
// pre-authorization link, never an authorizer's token (AllowsAuthorizer).
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

// AllowsAuthorizer reports whether the client may read the token of
// authorizer (an account that authorized component in namespace ns): some
// three-part pattern "namespace/component_appid/authorizer_appid" matches,
// "*" matching any part. Two-part patterns, "*/*" included, never grant an
// authorizer. At most eight map lookups; no allocation.
func (a *Access) AllowsAuthorizer(ns, component, authorizer string) bool {
	if len(a.authorizers) == 0 {
		return false
	}
	for _, n := range [2]string{ns, "*"} {
		for _, c := range [2]string{component, "*"} {
			for _, x := range [2]string{authorizer, "*"} {
				if _, ok := a.authorizers[authorizerKey{n, c, x}]; ok {
					return true
				}
			}
		}
	}
	return false
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

// splitAllow splits an allow pattern "namespace/appid" or
// "namespace/component_appid/authorizer_appid"; authorizer is "" for a
// two-part pattern, and ok is false when pat has another form (an empty
// part, more than three parts). Both Validate and Compile read patterns
// through it.
func splitAllow(pat string) (ns, appid, authorizer string, ok bool) {
	ns, rest, ok := strings.Cut(pat, "/")
	if !ok || ns == "" {
		return "", "", "", false
	}
	appid, authorizer, three := strings.Cut(rest, "/")
	if appid == "" || three && (authorizer == "" || strings.Contains(authorizer, "/")) {
		return "", "", "", false
	}
	return ns, appid, authorizer, true
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
		anyApp:      map[string]struct{}{},
		anyNS:       map[string]struct{}{},
		exact:       map[appKey]struct{}{},
		authorizers: map[authorizerKey]struct{}{},
	}
	copy(a.Digest[:], raw)
	reach := map[string]bool{}
	for _, pat := range cl.Allow {
		ns, appid, authorizer, ok := splitAllow(pat)
		switch {
		case !ok:
			return nil, fmt.Errorf("allow pattern %q is not namespace/appid or namespace/component_appid/authorizer_appid", pat)
		case authorizer != "":
			a.authorizers[authorizerKey{ns, appid, authorizer}] = struct{}{}
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
