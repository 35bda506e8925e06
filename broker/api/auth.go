package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"

	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/config"
)

// client is a configured client with its allow patterns compiled.
type client struct {
	name   string
	digest [sha256.Size]byte
	admin  bool

	all     bool                // "*/*"
	anyApp  map[string]struct{} // "ns/*": namespace
	anyNS   map[string]struct{} // "*/appid": appid
	exact   map[appKey]struct{} // "ns/appid"
	onlyNS  string              // the client's only namespace, "" when it has several
	nsCount int

	// invalidate is clients[].invalidate; reports bounds its reports
	// (clients[].invalidate_per_minute). See invalidate_guard.go.
	invalidate bool
	reports    *rate.Limiter
}

// appKey names one app; a comparable struct so map lookups do not allocate.
type appKey struct{ ns, appid string }

// allows reports whether the client may read appid in namespace ns.
func (c *client) allows(ns, appid string) bool {
	if c.all {
		return true
	}
	if _, ok := c.anyApp[ns]; ok {
		return true
	}
	if _, ok := c.anyNS[appid]; ok {
		return true
	}
	_, ok := c.exact[appKey{ns, appid}]
	return ok
}

// keyring finds the client a key belongs to.
//
// Keys are looked up by their SHA-256 digest in a map. The lookup's timing can
// only reveal something about the digest, and the digest is not a secret: it
// is what the config file holds, and learning it does not help to find a key
// (a preimage) for a key of reasonable entropy. Hashing first also gives every
// lookup the same cost whatever the key's length, and the final
// subtle.ConstantTimeCompare keeps the one byte-wise comparison constant-time
// as well. A linear constant-time scan over all clients would add cost per
// client to every read for no security gain.
type keyring struct {
	byDigest map[[sha256.Size]byte]*client
}

func newKeyring(cfg *config.Config) (*keyring, error) {
	k := &keyring{byDigest: make(map[[sha256.Size]byte]*client, len(cfg.Clients))}
	for i := range cfg.Clients {
		cc := &cfg.Clients[i]
		raw, err := hex.DecodeString(strings.ToLower(cc.KeySHA256))
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("api: clients[%d] (%s): key_sha256 is not 64 hex digits", i, cc.Name)
		}
		c := &client{
			name:       cc.Name,
			admin:      cc.Admin,
			invalidate: cc.MayInvalidate(),
			reports:    newReportLimiter(cc.InvalidateRate()),
			anyApp:     map[string]struct{}{},
			anyNS:      map[string]struct{}{},
			exact:      map[appKey]struct{}{},
		}
		copy(c.digest[:], raw)
		for _, pat := range cc.Allow {
			ns, appid, ok := strings.Cut(pat, "/")
			switch {
			case !ok:
				return nil, fmt.Errorf("api: clients[%d] (%s): allow pattern %q is not namespace/appid", i, cc.Name, pat)
			case ns == "*" && appid == "*":
				c.all = true
			case appid == "*":
				c.anyApp[ns] = struct{}{}
			case ns == "*":
				c.anyNS[appid] = struct{}{}
			default:
				c.exact[appKey{ns, appid}] = struct{}{}
			}
		}
		nss := cc.AllowedNamespaces(cfg)
		c.nsCount = len(nss)
		if len(nss) == 1 {
			c.onlyNS = nss[0]
		}
		if _, dup := k.byDigest[c.digest]; dup {
			return nil, fmt.Errorf("api: clients[%d] (%s): key is shared with another client", i, cc.Name)
		}
		k.byDigest[c.digest] = c
	}
	return k, nil
}

// lookup returns the client whose key is key, or nil.
func (k *keyring) lookup(key string) *client {
	if key == "" {
		return nil
	}
	d := sha256.Sum256([]byte(key))
	c := k.byDigest[d]
	if c == nil || subtle.ConstantTimeCompare(c.digest[:], d[:]) != 1 {
		return nil
	}
	return c
}

// bearer extracts the token of an "Authorization: Bearer <token>" header; the
// scheme is case-insensitive (RFC 7235).
func bearer(h string) string {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(h[len(prefix):])
}
