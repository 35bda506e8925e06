package wechattest

import (
	"crypto/rand"
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// kind is the kind of an app-level access token. Each kind has its own
// history per app: a classic fetch never affects stable tokens and vice versa.
type kind int

const (
	kindClassic kind = iota
	kindStable
	kindComponent
	kindAuthorizer
)

// sweepEvery is how many mints pass between sweeps of long-dead tokens and
// codes, which keeps a long-running `wxbroker sim` from growing forever.
const sweepEvery = 1024

// token is an app-level access token.
type token struct {
	value     string
	appID     string
	kind      kind
	expiresAt time.Time
	deadAt    time.Time // zero: not superseded; else invalid from deadAt on
}

// state returns 0 when the token is valid at now, else the errcode a call
// with it gets: 40001 when it was superseded, 42001 when it expired.
func (t *token) state(now time.Time) int {
	superseded := !t.deadAt.IsZero() && !now.Before(t.deadAt)
	expired := !now.Before(t.expiresAt)
	switch {
	case superseded && expired:
		if t.deadAt.Before(t.expiresAt) {
			return 40001
		}
		return 42001
	case superseded:
		return 40001
	case expired:
		return 42001
	}
	return 0
}

// kill makes the token invalid from at on, unless it already dies earlier.
func (t *token) kill(at time.Time) {
	if t.deadAt.IsZero() || at.Before(t.deadAt) {
		t.deadAt = at
	}
}

// newToken returns a fresh token string shaped like WeChat's ("90_…", 81
// characters).
func newToken() string {
	return "90_" + rand.Text() + rand.Text() + rand.Text()
}

// wellFormed reports whether a token looks like one WeChat issues
// ("<digits>_<base64url>"), as opposed to garbage.
func wellFormed(tok string) bool {
	i := strings.IndexByte(tok, '_')
	if i <= 0 || len(tok)-i-1 < 20 {
		return false
	}
	if strings.Trim(tok[:i], "0123456789") != "" {
		return false
	}
	for _, r := range tok[i+1:] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// mint issues a token of kind k for app a, valid for TokenTTL. Callers hold
// s.mu.
func (s *Sim) mint(a *app, k kind) *token {
	now := s.now()
	t := &token{value: newToken(), appID: a.id, kind: k, expiresAt: now.Add(s.opts.TokenTTL)}
	s.tokens[t.value] = t
	s.st.issued[a.id]++
	s.noteMint()
	return t
}

// chain returns the token history of kind k of app a.
func (a *app) chain(k kind) *chain {
	ch, ok := a.chains[k]
	if !ok {
		ch = &chain{}
		a.chains[k] = ch
	}
	return ch
}

// mintLastWins issues a token with classic semantics: the last fetch wins,
// the previous token stays valid for Overlap, older ones die at once.
func (s *Sim) mintLastWins(a *app, k kind) *token {
	now := s.now()
	ch := a.chain(k)
	if ch.previous != nil {
		ch.previous.kill(now)
	}
	if ch.current != nil {
		ch.current.kill(now.Add(s.opts.Overlap))
	}
	ch.previous = ch.current
	ch.current = s.mint(a, k)
	return ch.current
}

// checkToken validates an access token of one of the given kinds: 41001
// when missing, 40001 (superseded, or unknown but well-formed), 40014
// (malformed) or 42001 (expired). Callers hold s.mu.
func (s *Sim) checkToken(c *call, tok string, kinds ...kind) (*token, []byte) {
	if tok == "" {
		return nil, s.errBody(c, 41001, "")
	}
	t, ok := s.tokens[tok]
	if ok {
		ok = false
		for _, k := range kinds {
			ok = ok || t.kind == k
		}
	}
	if !ok {
		if wellFormed(tok) {
			return nil, s.errBody(c, 40001, "")
		}
		return nil, s.errBody(c, 40014, "")
	}
	if code := t.state(s.now()); code != 0 {
		return nil, s.errBody(c, code, "")
	}
	return t, nil
}

// appKinds are the kinds accepted where an app's access token is expected.
func appKinds() []kind { return []kind{kindClassic, kindStable, kindAuthorizer} }

// TokenValid reports whether token is an access token (classic, stable,
// component or authorizer) of appID that WeChat would accept right now.
func (s *Sim) TokenValid(appID, tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tok]
	return ok && t.appID == appID && t.state(s.now()) == 0
}

// TokenDeath reports when token, an access token of appID, stops (or
// stopped) being accepted: the earlier of its expiry and the moment a newer
// fetch superseded it (the overlap included). ok is false for a token the
// simulator did not issue to appID. A later fetch can only move the time
// earlier, never later.
func (s *Sim) TokenDeath(appID, tok string) (at time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tok]
	if !ok || t.appID != appID {
		return time.Time{}, false
	}
	at = t.expiresAt
	if !t.deadAt.IsZero() && t.deadAt.Before(at) {
		at = t.deadAt
	}
	return at, true
}

// tokenBody is the success body of the token endpoints (no errcode).
func tokenBody(value string, expiresIn time.Duration) []byte {
	b, _ := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}{value, int64(expiresIn / time.Second)})
	return b
}

// classicToken serves GET /cgi-bin/token.
func (s *Sim) classicToken(c *call) []byte {
	if c.q("grant_type") != "client_credential" {
		return s.errBody(c, 40002, "")
	}
	a, fail := s.checkSecret(c, c.q("appid"), c.q("secret"), 40164)
	if fail != nil {
		return fail
	}
	if fail := s.takeQuota(c, a, apiToken); fail != nil {
		return fail
	}
	t := s.mintLastWins(a, kindClassic)
	return tokenBody(t.value, s.opts.TokenTTL)
}

// stableToken serves POST /cgi-bin/stable_token (JSON body only).
func (s *Sim) stableToken(c *call) []byte {
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	if c.field("grant_type") != "client_credential" {
		return s.errBody(c, 40002, "")
	}
	a, fail := s.checkSecret(c, c.field("appid"), c.field("secret"), 40164)
	if fail != nil {
		return fail
	}
	if fail := s.takeQuota(c, a, apiStableToken); fail != nil {
		return fail
	}
	now := s.now()
	ch := a.chain(kindStable)
	cur := ch.current
	live := cur != nil && cur.state(now) == 0

	if c.flag("force_refresh") {
		if live && !a.lastForce.IsZero() && now.Sub(a.lastForce) < s.opts.ForceMinInterval {
			// Too soon after the previous force: WeChat does not refresh.
			return tokenBody(cur.value, cur.expiresAt.Sub(now))
		}
		if a.forces >= s.opts.ForceDailyLimit {
			return s.errBody(c, 45009, "")
		}
		a.forces++
		a.lastForce = now
		for _, t := range []*token{ch.previous, ch.current} {
			if t != nil {
				t.kill(now)
			}
		}
		ch.previous, ch.current = nil, s.mint(a, kindStable)
		return tokenBody(ch.current.value, s.opts.TokenTTL)
	}

	switch {
	case !live:
		ch.previous, ch.current = nil, s.mint(a, kindStable)
	case cur.expiresAt.Sub(now) <= s.opts.RotationWindow:
		// Inside the last RotationWindow: hand over to a successor; the old
		// token stays valid until its own expiry.
		ch.previous, ch.current = cur, s.mint(a, kindStable)
	}
	return tokenBody(ch.current.value, ch.current.expiresAt.Sub(now))
}

// getTicket serves GET /cgi-bin/ticket/getticket. Every call mints a new
// ticket; earlier tickets are not invalidated.
func (s *Sim) getTicket(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	typ := c.q("type")
	if typ != "jsapi" && typ != "wx_card" {
		return s.errBody(c, 40097, "invalid args: type must be jsapi or wx_card")
	}
	if a, ok := s.apps[t.appID]; ok {
		if fail := s.takeQuota(c, a, apiGetTicket); fail != nil {
			return fail
		}
	}
	b, _ := json.Marshal(struct {
		Errcode   int    `json:"errcode"`
		Errmsg    string `json:"errmsg"`
		Ticket    string `json:"ticket"`
		ExpiresIn int64  `json:"expires_in"`
	}{0, "ok", rand.Text() + rand.Text() + rand.Text(), int64(s.opts.TicketTTL / time.Second)})
	return b
}

// componentToken serves POST /cgi-bin/component/api_component_token. A
// component registered with AddComponent needs a verify ticket the
// simulator minted for it (61006, or 61005 when older than
// VerifyTicketTTL); any other added app may act as a component app with
// any non-empty ticket. Component tokens follow classic last-fetch-wins
// semantics.
func (s *Sim) componentToken(c *call) []byte {
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	a, fail := s.checkSecret(c, c.field("component_appid"), c.field("component_appsecret"), 61004)
	if fail != nil {
		return fail
	}
	ticket := c.field("component_verify_ticket")
	if ticket == "" {
		return s.errBody(c, 61006, "")
	}
	if comp, ok := s.comps.byID[a.id]; ok {
		if fail := s.checkVerifyTicket(c, comp, ticket); fail != nil {
			return fail
		}
	}
	if fail := s.takeQuota(c, a, apiComponentToken); fail != nil {
		return fail
	}
	t := s.mintLastWins(a, kindComponent)
	b, _ := json.Marshal(struct {
		ComponentAccessToken string `json:"component_access_token"`
		ExpiresIn            int64  `json:"expires_in"`
	}{t.value, int64(s.opts.TokenTTL / time.Second)})
	return b
}

// authorizerToken serves POST /cgi-bin/component/api_authorizer_token
// (?component_access_token=, or ?access_token= as newer docs write it).
// For a component registered with AddComponent the authorizer must have
// authorized it and the refresh token must be its current one
// (registeredAuthorizerToken). For any other added app used as a
// component, the authorizer app must be added and any non-empty
// authorizer_refresh_token is accepted and returned unchanged. Authorizer
// tokens follow classic last-fetch-wins semantics and count against the
// authorizer's quota.
func (s *Sim) authorizerToken(c *call) []byte {
	comp, fail := s.componentCall(c)
	if fail != nil {
		return fail
	}
	if comp != nil {
		return s.registeredAuthorizerToken(c, comp)
	}
	a, ok := s.apps[c.field("authorizer_appid")]
	if !ok {
		return s.errBody(c, 61003, "")
	}
	rt := c.field("authorizer_refresh_token")
	if rt == "" {
		return s.errBody(c, 61023, "")
	}
	if fail := s.takeQuota(c, a, apiAuthorizerToken); fail != nil {
		return fail
	}
	t := s.mintLastWins(a, kindAuthorizer)
	return authorizerTokenBody(t.value, s.opts.TokenTTL, rt)
}

// generic serves every other path under /cgi-bin/, /wxa/ and /sns/: it only
// checks the access token. A quota applies only when set with SetQuota.
func (s *Sim) generic(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	if a, ok := s.apps[t.appID]; ok {
		if fail := s.takeQuota(c, a, apiGeneric); fail != nil {
			return fail
		}
	}
	return okBody()
}

func okBody() []byte { return []byte(`{"errcode":0,"errmsg":"ok"}`) }

func parseForm(body []byte) (url.Values, error) { return url.ParseQuery(string(body)) }

// noteMint sweeps long-dead tokens and codes every sweepEvery mints. Tokens
// are forgotten a day after they died (they then answer 40001 instead of
// 42001), codes an hour after they expired (the answer stays 40029).
func (s *Sim) noteMint() {
	s.mints++
	if s.mints < sweepEvery {
		return
	}
	s.mints = 0
	now := s.now()
	for k, t := range s.tokens {
		end := t.expiresAt
		if !t.deadAt.IsZero() && t.deadAt.Before(end) {
			end = t.deadAt
		}
		if now.Sub(end) > 24*time.Hour {
			delete(s.tokens, k)
		}
	}
	for k, t := range s.userTokens {
		if now.Sub(t.expiresAt) > 24*time.Hour {
			delete(s.userTokens, k)
		}
	}
	for k, r := range s.refreshes {
		if now.After(r.expiresAt) {
			delete(s.refreshes, k)
		}
	}
	for k, cd := range s.codes {
		if now.Sub(cd.expiresAt) > time.Hour {
			delete(s.codes, k)
		}
	}
}
