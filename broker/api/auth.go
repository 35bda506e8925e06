package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"strings"

	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/config"
)

// client is a configured client with its compiled access (config.Access).
type client struct {
	name   string
	admin  bool
	access *config.Access
	onlyNS string // the client's only namespace, "" when it has several

	// invalidate is clients[].invalidate; reports bounds its reports
	// (clients[].invalidate_per_minute). See invalidate_guard.go.
	invalidate bool
	reports    *rate.Limiter
}

// appKey names one app; a comparable struct so map lookups do not allocate.
type appKey struct{ ns, appid string }

// allows reports whether the client may read appid in namespace ns.
func (c *client) allows(ns, appid string) bool { return c.access.Allows(ns, appid) }

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

// newKeyring indexes the clients of cfg by key digest. It takes each
// client's access as config compiled it (config.Client.Access) and parses
// nothing itself.
func newKeyring(cfg *config.Config) (*keyring, error) {
	k := &keyring{byDigest: make(map[[sha256.Size]byte]*client, len(cfg.Clients))}
	for i := range cfg.Clients {
		cc := &cfg.Clients[i]
		acc, err := cc.Access(cfg)
		if err != nil {
			return nil, fmt.Errorf("api: clients[%d] (%s): %w", i, cc.Name, err)
		}
		c := &client{
			name:       cc.Name,
			admin:      cc.Admin,
			access:     acc,
			onlyNS:     acc.OnlyNamespace(),
			invalidate: cc.MayInvalidate(),
			reports:    newReportLimiter(cc.InvalidateRate()),
		}
		if _, dup := k.byDigest[acc.Digest]; dup {
			return nil, fmt.Errorf("api: clients[%d] (%s): key is shared with another client", i, cc.Name)
		}
		k.byDigest[acc.Digest] = c
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
	if c == nil || subtle.ConstantTimeCompare(c.access.Digest[:], d[:]) != 1 {
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
