package login

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
)

// These tests pin the fixes of the security review (issue 10): each fails on
// the code before its fix.

// redisMemory returns DBSIZE and INFO memory's used_memory.
func redisMemory(t *testing.T, e *env) (keys, used int64) {
	t.Helper()
	ctx := context.Background()
	keys, err := e.rdb.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.rdb.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "used_memory:"); ok {
			used, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return keys, used
		}
	}
	t.Fatalf("INFO memory has no used_memory:\n%s", info)
	return 0, 0
}

// authorizeFloodBound is the documented bound (docs/OPERATIONS.md, Security
// model) on what any number of anonymous authorize calls may add to Redis:
// no key, and used_memory within allocator noise.
const authorizeFloodBound = 64 << 10

// TestAuthorizeFloodLeavesRedisFlat (finding 1): 2000 anonymous authorize
// calls, each with a return_to of about 2 KB and with the per-IP limit off,
// add no key to a real redis-server and keep used_memory within the bound;
// a flow started among them still completes, once.
func TestAuthorizeFloodLeavesRedisFlat(t *testing.T) {
	e := newEnv(t)
	long := e.URL + "/login?pad=" + strings.Repeat("x", 1900)
	keysBefore, usedBefore := redisMemory(t, e)
	var first *http.Response
	for i := range 2000 {
		resp := e.get(e.URL + routeWebAuthorize + "?return_to=" + url.QueryEscape(long))
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("authorize %d: status %d; want 302", i, resp.StatusCode)
		}
		if first == nil {
			first = resp
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	keysAfter, usedAfter := redisMemory(t, e)
	t.Logf("2000 authorize calls: keys %d → %d, used_memory %d → %d (%+d bytes)",
		keysBefore, keysAfter, usedBefore, usedAfter, usedAfter-usedBefore)
	if keysAfter != keysBefore {
		t.Errorf("DBSIZE %d → %d; want no key written by authorize", keysBefore, keysAfter)
	}
	if d := usedAfter - usedBefore; d > authorizeFloodBound {
		t.Errorf("used_memory grew by %d bytes; want at most %d", d, authorizeFloodBound)
	}
	if c := cookieNamed(first, stateCookie); c == nil || len(c.Value) > 3600 {
		t.Fatalf("state cookie = %v; want one that fits a browser's 4 KB cookie limit", c)
	}
	// One of the flood's states still works, once.
	c, cb := e.startWeb(long, "flo", true)
	if r := e.get(cb, c); r.StatusCode != http.StatusFound || r.Header.Get("Location") != long {
		t.Fatalf("callback: %d → %q; want 302 to return_to", r.StatusCode, r.Header.Get("Location"))
	}
	if r := e.get(cb, c); r.StatusCode != http.StatusForbidden {
		t.Fatalf("replayed callback: %d; want 403", r.StatusCode)
	}
	ttl, err := e.rdb.PTTL(t.Context(), e.srv.store.keys.stateUsed(digest(mustQuery(t, cb, "state")))).Result()
	if err != nil || ttl <= 0 || ttl > stateTTL+time.Second {
		t.Fatalf("used marker TTL = %v, %v; want (0, state lifetime]", ttl, err)
	}
}

func mustQuery(t *testing.T, raw, key string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get(key)
}

// TestStateCookieIsSealed (finding 1): the state cookie cannot be forged or
// edited to change return_to: a callback with a tampered cookie is refused.
func TestStateCookieIsSealed(t *testing.T) {
	e := newEnv(t)
	c, cb := e.startWeb("", "sam", true)
	b := []byte(c.Value)
	b[len(b)/2] ^= 1
	forged := *c
	forged.Value = string(b)
	if r := e.get(cb, &forged); r.StatusCode != http.StatusForbidden || cookieNamed(r, sessionCookie) != nil {
		t.Fatalf("tampered state cookie: %d; want 403 and no session", r.StatusCode)
	}
}

// TestRefreshByAccessTokenOnlyWithinLeeway (finding 2): an expired access
// token refreshes only within login.jwt.access_refresh_leeway; past it, it
// is just invalid (401) and does not touch its family; the body's refresh
// token keeps working.
func TestRefreshByAccessTokenOnlyWithinLeeway(t *testing.T) {
	e := newEnv(t)
	leeway := e.cfg.Login.JWT.AccessRefreshLeeway
	if leeway != 5*time.Minute {
		t.Fatalf("default access_refresh_leeway = %v; want 5m", leeway)
	}
	d := e.miniLogin("bea", "Bea", "")
	e.clock.Advance(e.cfg.Login.JWT.AccessTTL + leeway + time.Second)
	if r := e.post(routeRefresh, d.AccessToken, nil); r.Status != http.StatusUnauthorized || strings.Contains(r.Message, "reused") {
		t.Fatalf("access token expired %s ago: %d %q; want 401 invalid", leeway+time.Second, r.Status, r.Message)
	}
	if r := e.refreshWith(d.RefreshToken); r.Status != http.StatusOK {
		t.Fatalf("the refresh token after the stale access token: %d %q; want 200", r.Status, r.Message)
	}

	d2 := e.miniLogin("ben", "Ben", "")
	e.clock.Advance(e.cfg.Login.JWT.AccessTTL + leeway - time.Second)
	if r := e.post(routeRefresh, d2.AccessToken, nil); r.Status != http.StatusOK {
		t.Fatalf("access token expired %s ago (within the leeway): %d %q; want 200", leeway-time.Second, r.Status, r.Message)
	}
}

// TestWxLoginRateLimitedPerIP (finding 3): garbage codes from one client IP
// reach jscode2session at most burst times; the rest are answered 429 in the
// mini-program envelope without a WeChat call. wx-phone and authorize are
// limited too.
func TestWxLoginRateLimitedPerIP(t *testing.T) {
	e := newEnv(t, func(e *env) { e.cfg.Login.RateLimit.PerMinute, e.cfg.Login.RateLimit.Burst = 1, 3 })
	var last reply
	for i := range 10 {
		last = e.post(routeWxLogin, "", map[string]string{"code": "garbage" + strconv.Itoa(i)})
	}
	if n := e.sim.Calls("jscode2session", mpAppID); n != 3 {
		t.Errorf("jscode2session calls = %d; want 3 (the burst)", n)
	}
	if last.Status != http.StatusTooManyRequests || last.Code != http.StatusTooManyRequests || last.Timestamp == 0 || last.Message == "" {
		t.Fatalf("10th wx-login = %+v; want a 429 envelope", last)
	}
	assertLoginCount(t, e, metrics.FlowMiniProgram, resultRateLimited, 7)
	for range 4 {
		last = e.post(routeWxPhone, "not-a-token", map[string]string{"code": "x"})
	}
	if last.Status != http.StatusTooManyRequests {
		t.Errorf("4th wx-phone: %d; want 429", last.Status)
	}
	var status int
	for range 4 {
		status = e.get(e.URL + routeWebAuthorize).StatusCode
	}
	if status != http.StatusTooManyRequests {
		t.Errorf("4th authorize: %d; want 429", status)
	}
}

// TestForwardedForIgnoredUnlessTrustedProxy (finding 6): by default
// X-Forwarded-For does not change a client's identity, even from loopback
// or a private range; listed in login.trusted_proxies, the proxy's header
// names the client.
func TestForwardedForIgnoredUnlessTrustedProxy(t *testing.T) {
	callback := func(e *env, xff string) int {
		req, err := http.NewRequest(http.MethodGet, e.URL+routeWebCallback+"?state=x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("no trusted proxy", func(t *testing.T) {
		e := newEnv(t)
		var last int
		for i := range e.srv.callbackBurst + 1 {
			last = callback(e, "10.0.0."+strconv.Itoa(i+1)) // a new identity every time, if it were trusted
		}
		if last != http.StatusTooManyRequests {
			t.Fatalf("request %d with rotating X-Forwarded-For: %d; want 429 (the header is ignored)", e.srv.callbackBurst+1, last)
		}
	})
	t.Run("trusted proxy", func(t *testing.T) {
		e := newEnv(t, func(e *env) { e.cfg.Login.TrustedProxies = []string{"127.0.0.0/8"} })
		for i := range e.srv.callbackBurst + 1 {
			if s := callback(e, "198.51.100."+strconv.Itoa(i+1)); s == http.StatusTooManyRequests {
				t.Fatalf("request %d from a new client behind the trusted proxy: 429", i+1)
			}
		}
		// A client cannot prepend its own entries: the nearest untrusted
		// address is the identity.
		var last int
		for i := range e.srv.callbackBurst + 1 {
			last = callback(e, "203.0.113."+strconv.Itoa(i+1)+", 198.51.100.200")
		}
		if last != http.StatusTooManyRequests {
			t.Fatalf("spoofed left-most X-Forwarded-For entries changed the identity: %d; want 429", last)
		}
	})
	if got := clientKey("2001:db8:1:2:3:4:5:6"); got != "2001:db8:1:2::/64" {
		t.Errorf("clientKey(IPv6) = %q; want its /64", got)
	}
}

// TestReuseWindowIsShortAndMetered (finding 7): a rotated refresh token is
// answered again only within login.jwt.refresh_reuse_window (default 2 s),
// each time counted as result "replayed"; at 3 s it is a replay that revokes
// the family.
func TestReuseWindowIsShortAndMetered(t *testing.T) {
	e := newEnv(t)
	if w := e.cfg.Login.JWT.RefreshReuseWindow; w != 2*time.Second {
		t.Fatalf("default refresh_reuse_window = %v; want 2s", w)
	}
	d := e.miniLogin("vera", "Vera", "")
	p1 := decodeData[loginData](t, e.refreshWith(d.RefreshToken))
	e.clock.Advance(time.Second)
	if again := decodeData[loginData](t, e.refreshWith(d.RefreshToken)); again.RefreshToken != p1.RefreshToken {
		t.Fatal("retry at 1 s got another pair; want the first refresh's")
	}
	assertLoginCount(t, e, metrics.FlowRefresh, resultReplayed, 1)
	assertLoginCount(t, e, metrics.FlowRefresh, metrics.ResultSuccess, 1)
	e.clock.Advance(2 * time.Second)
	if r := e.refreshWith(d.RefreshToken); r.Status != http.StatusUnauthorized || !strings.Contains(r.Message, "reused") {
		t.Fatalf("retry at 3 s: %d %q; want 401 reuse", r.Status, r.Message)
	}
	if s := e.profileStatus(e.URL, p1.AccessToken); s != http.StatusUnauthorized {
		t.Fatalf("family after the replay: status %d; want 401", s)
	}
	if !strings.Contains(e.logs.String(), "reuse window") {
		t.Error("the replay within the window was not logged")
	}
}

// chunkedReader hides its length, so the request goes out chunked.
type chunkedReader struct{ io.Reader }

// TestChunkedOversizeBodyIs413 (finding 8): a body past the limit without
// Content-Length answers 413 in the envelope, like one that declares it.
func TestChunkedOversizeBodyIs413(t *testing.T) {
	e := newEnv(t)
	for _, route := range []string{routeWxLogin, routeRefresh} {
		body := `{"code":"` + strings.Repeat("a", 100<<10) + `"}`
		req, err := http.NewRequest(http.MethodPost, e.URL+route, chunkedReader{strings.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if req.ContentLength != -1 && req.ContentLength != 0 {
			t.Fatalf("request had Content-Length %d; want chunked", req.ContentLength)
		}
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), `"code":413`) {
			t.Errorf("%s chunked 100 KB: %d %s; want 413", route, resp.StatusCode, raw)
		}
	}
}

// TestPublicErrorsHideConfigErrcodes (finding 8): a WeChat error that is the
// operator's (here a wrong AppSecret, 40125) reaches the end user as generic
// text without errcode, hint or rid, while the log keeps them; an error
// about the user's own code still carries its errcode.
func TestPublicErrorsHideConfigErrcodes(t *testing.T) {
	e := newEnv(t, func(e *env) {
		a, _ := e.cfg.App(testNS, mpAppID)
		a.Secret = "wrong-secret-0000000000000000000"
		w, _ := e.cfg.App(testNS, webAppID)
		w.Secret = "wrong-secret-1111111111111111111"
	})
	r := e.post(routeWxLogin, "", map[string]string{"code": e.sim.MintLoginCode(mpAppID, "cfg")})
	if r.Status != http.StatusServiceUnavailable || r.Code != http.StatusServiceUnavailable || r.Errcode != 0 || r.Hint != "" || r.RID != "" ||
		strings.Contains(r.Message, "40125") || strings.Contains(strings.ToLower(r.Message), "secret") || r.Timestamp == 0 {
		t.Fatalf("wx-login with a wrong AppSecret = %+v; want a generic 503 envelope", r)
	}
	if !strings.Contains(e.logs.String(), `"errcode":40125`) {
		t.Error("the log lacks errcode 40125")
	}
	c, cb := e.startWeb("", "cfg", true)
	resp := e.get(cb, c)
	page, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(page), "40125") || strings.Contains(string(page), "AppSecret") {
		t.Fatalf("web callback with a wrong AppSecret: %d, page mentions the errcode or AppSecret:\n%s", resp.StatusCode, page)
	}
}

// TestUserIDsAreOpaque (finding 8): answers carry an opaque, non-sequential
// user id (also the access token's sub); a user created before public ids,
// and an access token whose sub is the old numeric id, keep working.
func TestUserIDsAreOpaque(t *testing.T) {
	e := newEnv(t)
	a := e.miniLogin("ann", "Ann", "")
	b := e.miniLogin("bob", "Bob", "")
	for _, id := range []string{a.User.ID, b.User.ID} {
		if !strings.HasPrefix(id, "u_") || len(id) < 16 {
			t.Fatalf("user id %q; want an opaque u_… id", id)
		}
		if _, err := strconv.Atoi(id); err == nil {
			t.Fatalf("user id %q is a number", id)
		}
	}
	if a.User.ID == b.User.ID {
		t.Fatal("two users share an id")
	}
	cl, err := e.srv.signer.verify(a.AccessToken, e.clock.Now(), 0)
	if err != nil || cl.Subject != a.User.ID {
		t.Fatalf("sub = %v, %v; want the public id %q", cl, err, a.User.ID)
	}

	// A user and a token from before public ids: numeric sub, no public_id.
	ctx := t.Context()
	uid := e.uid(a.User.ID)
	if err := e.rdb.HDel(ctx, e.srv.store.keys.user(uid), fieldPublicID).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HDel(ctx, e.srv.store.keys.family(cl.SID), "sub").Err(); err != nil {
		t.Fatal(err)
	}
	old, _, err := e.srv.signer.sign(uid, cl.SID, cl.ID, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	r := e.call(http.MethodGet, e.URL, routeProfile, old, nil)
	p := decodeData[profileView](t, r)
	if !strings.HasPrefix(p.ID, "u_") || p.Nickname != "Ann" {
		t.Fatalf("profile with an old numeric-sub token = %+v; want Ann with a new opaque id", p)
	}
	if p2 := decodeData[profileView](t, e.call(http.MethodGet, e.URL, routeProfile, old, nil)); p2.ID != p.ID {
		t.Fatalf("opaque id changed between reads: %q then %q", p.ID, p2.ID)
	}
	n := decodeData[loginData](t, e.refreshWith(a.RefreshToken))
	if ncl, err := e.srv.signer.verify(n.AccessToken, e.clock.Now(), 0); err != nil || ncl.Subject != p.ID {
		t.Fatalf("refreshed token sub = %v, %v; want %q", ncl, err, p.ID)
	}
}
