package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// The gateway accepts any access token the broker ever handed out, until
// that token's own expiry, even when it was replaced or killed since: that is
// exactly what an SDK with a stale cache sends. Every replica must recognise
// every such token, including ones stored before it started or whose pub/sub
// message it missed. So the leader's fenced write also stores, per access
// token, {p}:ns:<namespace>:issued:<sha256 of the token> =
// "namespace\tfield\texpiry" with the token's lifetime as TTL (Redis forgets
// it soon after it expires), and each
// replica keeps the tokens it has applied in an in-process map. A lookup of a
// known token costs no Redis round trip; an unknown one costs one pipelined
// GET per namespace (one round trip, shared by concurrent lookups of the same
// value: the token does not say its namespace), and a token Redis does not know
// is remembered as unknown, so that garbage does not cost a round trip per
// request.

// Bounds of the in-process maps.
const (
	issuedPruneEvery = 256    // adds between sweeps of expired entries
	unknownMax       = 10_000 // remembered unknown tokens; the set is cleared when full
	maxTokenLen      = 2048   // longer values are never looked up in Redis
)

// ErrTokenLookup is returned (wrapped) by IssuedTokenApp when Redis could not
// answer for a token this replica does not know.
var ErrTokenLookup = errors.New("broker: token lookup in redis failed")

type issuedEntry struct {
	it  *item
	exp time.Time
}

// issuedIndex is the in-process map of handed-out access tokens.
type issuedIndex struct {
	mu      sync.RWMutex
	m       map[string]issuedEntry
	unknown map[string]struct{}
	adds    int
	flight  singleflight.Group
}

func (x *issuedIndex) lookup(tok string) (issuedEntry, bool, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.m[tok]
	_, unknown := x.unknown[tok]
	return e, ok, unknown
}

// add records tok for it until exp (a later expiry of the same value wins).
func (x *issuedIndex) add(tok string, it *item, exp, now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.m == nil {
		x.m = map[string]issuedEntry{}
	}
	if old, ok := x.m[tok]; ok && old.exp.After(exp) {
		return
	}
	x.m[tok] = issuedEntry{it: it, exp: exp}
	delete(x.unknown, tok)
	if x.adds++; x.adds >= issuedPruneEvery {
		x.adds = 0
		for k, e := range x.m {
			if !now.Before(e.exp) {
				delete(x.m, k)
			}
		}
	}
}

func (x *issuedIndex) markUnknown(tok string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.unknown == nil || len(x.unknown) >= unknownMax {
		x.unknown = map[string]struct{}{}
	}
	if _, ok := x.m[tok]; !ok {
		x.unknown[tok] = struct{}{}
	}
}

// issuedApp is IssuedTokenApp.
func (b *replica) issuedApp(ctx context.Context, tok string) (ns, appid string, ok bool, err error) {
	now := b.now()
	e, known, unknown := b.issued.lookup(tok)
	if known {
		if now.Before(e.exp) && b.catalog().has(e.it) {
			return e.it.ns, e.it.appid, true, nil
		}
		return "", "", false, nil
	}
	if unknown || !validValue(tok) || len(tok) > maxTokenLen {
		return "", "", false, nil
	}
	v, err, _ := b.issued.flight.Do(tok, func() (any, error) {
		return b.lookupIssued(ctx, tok)
	})
	if err != nil {
		return "", "", false, err
	}
	e, found := v.(issuedEntry)
	if !found || e.it == nil || !now.Before(e.exp) || !b.catalog().has(e.it) {
		return "", "", false, nil
	}
	return e.it.ns, e.it.appid, true, nil
}

// lookupIssued asks Redis about a token this replica does not know.
func (b *replica) lookupIssued(ctx context.Context, tok string) (issuedEntry, error) {
	// Concurrent lookups share this one: the first caller going away must
	// not fail the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.WeChat.Timeout)
	defer cancel()
	ns, field, exp, found, err := b.store.lookupIssued(ctx, tok)
	if err != nil {
		return issuedEntry{}, fmt.Errorf("%w: %w", ErrTokenLookup, err)
	}
	it := b.itemByField(ns, field)
	if !found || it == nil || it.kind != KindAccessToken {
		b.issued.markUnknown(tok)
		return issuedEntry{}, nil
	}
	e := issuedEntry{it: it, exp: exp}
	b.issued.add(tok, it, e.exp, b.now())
	return e, nil
}
