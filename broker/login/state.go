package login

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The website flow's OAuth state lives in the browser, not in Redis: the
// state cookie holds {id, return_to, created} sealed with the AES key
// (AES-256-GCM, bound to its purpose), and WeChat carries only the random id
// as the state parameter. GET /api/v1/auth/web/authorize therefore writes
// nothing to Redis, however often anonymous clients call it. Single use is
// enforced at the callback: the first callback for an id writes a short
// "used" marker (SET NX, expiring when the state would have), and any later
// callback with the same id is refused. Markers are written only by
// callbacks, which are rate limited per client IP and need a cookie that
// only this broker can have sealed.

// oauthState is the sealed content of the state cookie.
type oauthState struct {
	ID        string `json:"i"` // the state parameter sent to WeChat
	ReturnTo  string `json:"r"`
	CreatedMS int64  `json:"t"`
}

// stateAD binds a sealed state to its purpose.
const stateAD = "oauth-state"

// states are the website flow's OAuth states: minted into the sealed
// cookie by authorize, consumed once by the callback.
type states struct {
	seal  *sealer
	store *store // the "used" markers, and records from before sealing
	now   func() time.Time
}

// newState returns a state id and the cookie value carrying it.
func (ss *states) newState(returnTo string) (id, cookie string, err error) {
	st := oauthState{ID: randomToken(16), ReturnTo: returnTo, CreatedMS: ss.now().UnixMilli()}
	b, err := json.Marshal(st)
	if err != nil {
		return "", "", fmt.Errorf("login: encode oauth state: %w", err)
	}
	return st.ID, ss.seal.SealURL(string(b), stateAD), nil
}

// Reasons a callback's state is refused.
var (
	errStateMismatch = errors.New("login: state does not match the cookie")
	errStateUsed     = errors.New("login: state already used or unknown")
	errStateExpired  = errors.New("login: state expired")
)

// consumeState checks the callback's state against the cookie (same id, at
// most stateTTL old) and marks it used; it returns where to go afterwards.
func (ss *states) consumeState(ctx context.Context, state, cookie string) (oauthState, error) {
	var st oauthState
	plain, err := ss.seal.OpenURL(cookie, stateAD)
	if err != nil {
		// A state minted before states were sealed (a rolling upgrade):
		// the cookie is the state itself and Redis holds the record.
		if subtle.ConstantTimeCompare([]byte(cookie), []byte(state)) == 1 {
			return ss.consumeStoredState(ctx, state)
		}
		return st, errStateMismatch
	}
	if json.Unmarshal([]byte(plain), &st) != nil || subtle.ConstantTimeCompare([]byte(st.ID), []byte(state)) != 1 {
		return oauthState{}, errStateMismatch
	}
	left := stateTTL - ss.now().Sub(time.UnixMilli(st.CreatedMS))
	if left <= 0 {
		return st, errStateExpired
	}
	// The marker outlives the state by a second, so a replay at the very
	// end of the state's life is refused too.
	ok, err := ss.store.markStateUsed(ctx, st.ID, left+time.Second)
	if err != nil {
		return st, err
	}
	if !ok {
		return st, errStateUsed
	}
	return st, nil
}

// consumeStoredState is the pre-sealing path: GETDEL the stored record.
func (ss *states) consumeStoredState(ctx context.Context, state string) (oauthState, error) {
	raw, ok, err := ss.store.takeStoredState(ctx, state)
	if err != nil {
		return oauthState{}, err
	}
	if !ok {
		return oauthState{}, errStateUsed
	}
	var rec struct {
		ReturnTo  string `json:"return_to"`
		CreatedMS int64  `json:"created_ms"`
	}
	if json.Unmarshal([]byte(raw), &rec) != nil {
		return oauthState{}, errStateUsed
	}
	st := oauthState{ID: state, ReturnTo: rec.ReturnTo, CreatedMS: rec.CreatedMS}
	if ss.now().Sub(time.UnixMilli(rec.CreatedMS)) > stateTTL {
		return st, errStateExpired
	}
	return st, nil
}
