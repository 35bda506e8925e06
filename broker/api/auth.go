package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
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

	// readFields memoizes, per *appInfo, the encoded fields of the audit
	// line of a successful token read by this client (auditFields).
	readFields sync.Map
}

// auditFields returns the fields of the audit line of a successful token read
// of ai by c, as l.appendFields encodes them, encoding them on first use.
// Racing readers may each encode them; they are equal.
func (c *client) auditFields(l *auditLog, ai *appInfo) []byte {
	if f, ok := c.readFields.Load(ai); ok {
		return f.([]byte)
	}
	f := l.appendFields(nil, eventAccessToken, c.name, ai.ns, ai.appid, metrics.RequestOK)
	c.readFields.Store(ai, f)
	return f
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
//
// SHA-256 of the key was the largest part of the API's own cost per token
// read (docs/BENCHMARKS.md), so a key that has passed that check is
// remembered: verified maps a keyed hash of it (hash/maphash, a seed random
// per process, so its timing says nothing an attacker can use) to the key
// and its client, and a later request with the same key is compared with
// it in constant time (subtle.ConstantTimeCompare) instead of being hashed.
// Only keys that matched a configured digest enter it, so it holds at most
// one entry per client and cannot be grown by guessing; it belongs to this
// keyring, so a keyring built anew (for a changed set of clients) starts
// empty and a removed key is refused at once. It keeps the plaintext keys
// of active clients in memory, as every request carrying one already does
// for the request's life.
type keyring struct {
	byDigest map[[sha256.Size]byte]*client
	seed     maphash.Seed
	verified atomic.Pointer[map[uint64]verifiedKey] // copied on write
	mu       sync.Mutex                             // serializes writers of verified
}

// verifiedKey is a key that matched its client's digest.
type verifiedKey struct {
	key    []byte
	client *client
}

// newKeyring indexes the clients of cfg by key digest. It takes each
// client's access as config compiled it (config.Client.Access) and parses
// nothing itself.
func newKeyring(cfg *config.Config) (*keyring, error) {
	k := &keyring{byDigest: make(map[[sha256.Size]byte]*client, len(cfg.Clients)), seed: maphash.MakeSeed()}
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
	h := maphash.String(k.seed, key)
	if m := k.verified.Load(); m != nil {
		if v, ok := (*m)[h]; ok && subtle.ConstantTimeCompare(v.key, []byte(key)) == 1 {
			return v.client
		}
	}
	d := sha256.Sum256([]byte(key))
	c := k.byDigest[d]
	if c == nil || subtle.ConstantTimeCompare(c.access.Digest[:], d[:]) != 1 {
		return nil
	}
	k.remember(h, key, c)
	return c
}

// remember adds a verified key to k.verified.
func (k *keyring) remember(h uint64, key string, c *client) {
	k.mu.Lock()
	defer k.mu.Unlock()
	old := k.verified.Load()
	m := make(map[uint64]verifiedKey, 1)
	if old != nil {
		m = make(map[uint64]verifiedKey, len(*old)+1)
		for kh, v := range *old {
			if v.client != c { // a client has one key: drop a stale entry
				m[kh] = v
			}
		}
	}
	m[h] = verifiedKey{key: []byte(key), client: c}
	k.verified.Store(&m)
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
