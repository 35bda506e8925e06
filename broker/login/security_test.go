package login

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// These tests pin security properties that the flow tests exercise only
// indirectly; each one fails when the property is removed from the code.

func TestCookieSecureFollowsConfig(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name   string
		secure *bool
		want   bool
	}{
		{"cookie_secure unset: secure", nil, true},
		{"cookie_secure true", &yes, true},
		{"cookie_secure false", &no, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(e *env) { e.cfg.Login.Web.CookieSecure = tt.secure })
			resp := e.get(e.URL + routeWebAuthorize)
			st := cookieNamed(resp, stateCookie)
			if resp.StatusCode != http.StatusFound || st == nil || st.Secure != tt.want {
				t.Fatalf("authorize: %d, state cookie %+v; want Secure=%v", resp.StatusCode, st, tt.want)
			}
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil {
				t.Fatal(err)
			}
			q := loc.Query()
			q.Set("person", "sam")
			q.Set("action", "confirm")
			confirm := e.get(e.sim.URL + "/connect/qrconnect/confirm?" + q.Encode())
			cb := e.get(confirm.Header.Get("Location"), st)
			sess := cookieNamed(cb, sessionCookie)
			if cb.StatusCode != http.StatusFound || sess == nil || sess.Secure != tt.want ||
				!sess.HttpOnly || sess.SameSite != http.SameSiteLaxMode {
				t.Fatalf("callback: %d, session cookie %+v; want HttpOnly, SameSite=Lax, Secure=%v", cb.StatusCode, sess, tt.want)
			}
		})
	}
}

// TestReturnToAllowList checks return_to against allowed URLs with and
// without a path, for the host, port, scheme and path confusions of open
// redirects.
func TestReturnToAllowList(t *testing.T) {
	s := &webFlow{cfg: &config.WebLogin{}}
	s.cfg.AllowedReturnURLs = []string{"https://example.com/", "https://app.example.org/app"}
	good := []string{
		"https://example.com/",
		"https://example.com",
		"https://example.com/x/y?z=1#f",
		"https://example.com:443/x",
		"https://EXAMPLE.com/x",
		"https://app.example.org/app",
		"https://app.example.org/app/",
		"https://app.example.org/app/x/y",
	}
	bad := []string{
		"https://example.com.evil.com/",
		"https://example.com.evil.com",
		"https://example.com@evil.com/",
		"https://evil.com/https://example.com/",
		"https://evil.com/?https://example.com/",
		"https://example.com:8443/",
		"https://example.com:80/",
		"http://example.com/",
		"ftp://example.com/",
		"https:example.com/",
		"//example.com/",
		"/x",
		"https://example.com/..",
		"https://example.com/a/../../b",
		`https://example.com/a/..\b`,
		`https://example.com\@evil.com/`,
		"https://example.com//evil.com/",
		"https://app.example.org/application",
		"https://app.example.org/",
		"https://app.example.org/app/../admin",
		`https://app.example.org/app/..\admin`,
		"https://app.example.org:444/app",
		"https://app.example.org.evil.com/app",
		"https://example.com/\r\nSet-Cookie:x=y",
	}
	for _, u := range good {
		if got, ok := s.returnURL(u); !ok || got != u {
			t.Errorf("returnURL(%q) = %q, %v; want it allowed unchanged", u, got, ok)
		}
	}
	for _, u := range bad {
		if got, ok := s.returnURL(u); ok {
			t.Errorf("returnURL(%q) = %q, allowed; want refused", u, got)
		}
	}
	if got, ok := s.returnURL(""); !ok || got != "https://example.com/" {
		t.Errorf("returnURL(\"\") = %q, %v; want the first allowed URL", got, ok)
	}
}

// TestAccessTokenClaimsEnforced re-signs a real token's claims with the
// server's own key, changing one claim at a time: only the untouched one passes.
func TestAccessTokenClaimsEnforced(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("tess", "Tess", "")
	var orig jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(d.AccessToken, &orig); err != nil {
		t.Fatal(err)
	}
	sign := func(edit func(jwt.MapClaims)) string {
		c := jwt.MapClaims{}
		for k, v := range orig {
			c[k] = v
		}
		edit(c)
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tok.Header["kid"] = e.srv.signer.kid
		s, err := tok.SignedString(e.srv.signer.priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := e.profileStatus(e.URL, sign(func(jwt.MapClaims) {})); s != http.StatusOK {
		t.Fatalf("re-signed original claims: status %d; want 200 (the forgery helper is broken)", s)
	}
	tests := map[string]func(jwt.MapClaims){
		"audience of another service": func(c jwt.MapClaims) { c["aud"] = []string{"other-service"} },
		"no audience":                 func(c jwt.MapClaims) { delete(c, "aud") },
		"issuer of another service":   func(c jwt.MapClaims) { c["iss"] = "other-service" },
		"no expiry":                   func(c jwt.MapClaims) { delete(c, "exp") },
		"expired a second ago":        func(c jwt.MapClaims) { c["exp"] = e.clock.Now().Add(-time.Second).Unix() },
		"no jti":                      func(c jwt.MapClaims) { delete(c, "jti") },
		"no sid":                      func(c jwt.MapClaims) { delete(c, "sid") },
		"unknown family":              func(c jwt.MapClaims) { c["sid"] = "no-such-family" },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			if s := e.profileStatus(e.URL, sign(edit)); s != http.StatusUnauthorized {
				t.Fatalf("profile: status %d; want 401", s)
			}
		})
	}
}

// TestDenylistBlocksOneAccessToken: a denylisted jti is refused on its own,
// even while its refresh family is alive, and logout writes that entry
// until the token's expiry.
func TestDenylistBlocksOneAccessToken(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	d := e.miniLogin("uli", "Uli", "")
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(d.AccessToken, &c); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.families.revoke(ctx, "", c.ID, c.ExpiresAt.Time); err != nil {
		t.Fatal(err)
	}
	if s := e.profileStatus(e.URL, d.AccessToken); s != http.StatusUnauthorized {
		t.Fatalf("denylisted access token: status %d; want 401", s)
	}
	p := decodeData[loginData](t, e.refreshWith(d.RefreshToken)) // the family is untouched
	if s := e.profileStatus(e.URL, p.AccessToken); s != http.StatusOK {
		t.Fatalf("next access token of the family: status %d; want 200", s)
	}

	// Logout denylists the presented token until it expires.
	var pc jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(p.AccessToken, &pc); err != nil {
		t.Fatal(err)
	}
	if r := e.post(routeLogout, p.AccessToken, nil); r.Status != http.StatusOK {
		t.Fatalf("logout: %d", r.Status)
	}
	ttl, err := e.rdb.PTTL(ctx, e.srv.store.keys.deny(pc.ID)).Result()
	if err != nil || ttl <= 0 || ttl > e.cfg.Login.JWT.AccessTTL {
		t.Fatalf("denylist entry TTL = %v, %v; want (0, access_ttl]", ttl, err)
	}
}

// recorder keeps every response body and header of one host.
type recorder struct {
	base http.RoundTripper
	host string
	mu   sync.Mutex
	seen bytes.Buffer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil || req.URL.Host != r.host {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, vs := range resp.Header {
		r.seen.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
	}
	r.seen.Write(body)
	r.seen.WriteByte('\n')
	return resp, nil
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen.String()
}

// TestResponsesLeakNoSecret runs every route, failures included, and scans
// every response (headers and body) for the server-side secrets.
func TestResponsesLeakNoSecret(t *testing.T) {
	e := newEnv(t, withCallbackBurst(100))
	u, _ := url.Parse(e.URL)
	rec := &recorder{base: http.DefaultTransport, host: u.Host}
	e.http.Transport = rec

	d := e.miniLogin("wendy", "Wendy", "")
	e.post(routeWxLogin, "", map[string]string{"code": "0a1b2c3d4e5f"})
	e.call(http.MethodGet, e.URL, routeProfile, d.AccessToken, nil)
	phoneCode := e.sim.MintPhoneCode(mpAppID, "13500135000")
	e.sim.Fail("getuserphonenumber", 1, wechattest.Fault{Errcode: 40001})
	decodeData[phoneView](t, e.post(routeWxPhone, d.AccessToken, map[string]string{"code": phoneCode}))
	e.post(routeWxPhone, d.AccessToken, map[string]string{"code": "nope"})
	usr, err := e.srv.users.loadUser(t.Context(), e.uid(d.User.ID))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := e.srv.users.secret(usr, fieldSessionKey+mpAppID)
	if err != nil || sk == "" {
		t.Fatalf("session_key = %q, %v", sk, err)
	}
	ed, iv := encryptUserData(t, sk, []byte(`{"openId":"x","watermark":{"appid":"`+mpAppID+`"}}`))
	e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": ed, "iv": iv})
	e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": ed + "AA", "iv": iv})
	p := decodeData[loginData](t, e.refreshWith(d.RefreshToken))
	e.post(routeRefresh, p.AccessToken, nil)
	e.get(e.URL + routeJWKS)
	e.post(routeLogout, p.AccessToken, nil)

	e.sim.SetProfile("wendy", "Wendy", "")
	sess := e.webLogin("wendy")
	e.get(e.URL+routeProfile, sess)
	e.get(e.URL+routeLoginPage, sess)
	c, cb := e.startWeb("", "wendy", true)
	e.get(cb, c)
	e.get(cb, c) // reused state
	wu, err := e.srv.users.loadUser(t.Context(), e.uid(d.User.ID))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := e.srv.users.secret(wu, fieldOAuth+webAppID)
	var oauth oauthRecord
	if err != nil || jsonUnmarshal(raw, &oauth) != nil || oauth.AccessToken == "" {
		t.Fatalf("oauth record = %q, %v", raw, err)
	}
	brokerTok, _ := e.fake.AccessToken(testNS, mpAppID)

	seen := rec.String()
	if !strings.Contains(seen, d.RefreshToken) || !strings.Contains(seen, "Wendy") {
		t.Fatal("the recorder saw no login response; the scan would prove nothing")
	}
	for name, secret := range map[string]string{
		"session_key": sk, "OAuth access_token": oauth.AccessToken, "OAuth refresh_token": oauth.RefreshToken,
		"broker access_token": brokerTok.AccessToken, "mini-program AppSecret": mpSecret,
		"website AppSecret": webSecret, "AES key": e.aesKey,
	} {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(seen, secret) {
			t.Errorf("a response carries the %s", name)
		}
	}
}

// TestSealedFieldsBoundToPlace: sealed values are ciphertext (not an
// encoding of the plaintext) and open only in the user and field they were
// sealed for.
func TestSealedFieldsBoundToPlace(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	a := e.miniLogin("xena", "Xena", "")
	b := e.miniLogin("yuri", "Yuri", "")
	code := e.sim.MintPhoneCode(mpAppID, "13400134000")
	decodeData[phoneView](t, e.post(routeWxPhone, a.AccessToken, map[string]string{"code": code}))
	aid, bid := e.uid(a.User.ID), e.uid(b.User.ID)
	ua, err := e.srv.users.loadUser(ctx, aid)
	if err != nil {
		t.Fatal(err)
	}
	skField := fieldSessionKey + mpAppID
	sk, err := e.srv.users.secret(ua, skField)
	if err != nil || sk == "" {
		t.Fatalf("session_key = %q, %v", sk, err)
	}
	skRaw, _ := base64.StdEncoding.DecodeString(sk)
	for field, plain := range map[string][]string{skField: {sk, string(skRaw)}, fieldPhone: {"13400134000"}} {
		stored := ua.fields[field]
		if stored == "" {
			t.Fatalf("field %s not stored", field)
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.StdEncoding, base64.RawURLEncoding, base64.URLEncoding} {
			dec, err := enc.DecodeString(stored)
			if err != nil {
				continue
			}
			for _, p := range plain {
				if bytes.Contains(dec, []byte(p)) {
					t.Errorf("field %s is an encoding of its plaintext, not ciphertext", field)
				}
			}
		}
	}

	// Moved to another user, a sealed value does not open.
	if err := e.rdb.HSet(ctx, e.srv.store.keys.user(bid), fieldPhone, ua.fields[fieldPhone], skField, ua.fields[skField]).Err(); err != nil {
		t.Fatal(err)
	}
	if p := decodeData[profileView](t, e.call(http.MethodGet, e.URL, routeProfile, b.AccessToken, nil)); p.PhoneNumber != "" {
		t.Errorf("another user's sealed phone, copied to user %s, shows as %q; want none", bid, p.PhoneNumber)
	}
	ub, err := e.srv.users.loadUser(ctx, bid)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.srv.users.secret(ub, skField); err == nil {
		t.Errorf("another user's sealed session_key opens for user %s (%d bytes)", bid, len(got))
	}
	// Moved to another field of the same user, it does not open either.
	if err := e.rdb.HSet(ctx, e.srv.store.keys.user(aid), fieldPhone, ua.fields[skField]).Err(); err != nil {
		t.Fatal(err)
	}
	ua, err = e.srv.users.loadUser(ctx, aid)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.srv.users.secret(ua, fieldPhone); err == nil {
		t.Errorf("the sealed session_key opens as the phone field (%d bytes)", len(got))
	}
}

// TestCallbackRateLimitPerClientIP: one client using up its callbacks does
// not lock out another (X-Forwarded-For from a trusted proxy names the client).
func TestCallbackRateLimitPerClientIP(t *testing.T) {
	e := newEnv(t, func(e *env) { e.cfg.Login.TrustedProxies = []string{"127.0.0.1"} })
	from := func(ip string) int {
		req, err := http.NewRequest(http.MethodGet, e.URL+routeWebCallback+"?state=x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var last int
	for range e.srv.callbackBurst + 1 {
		last = from("203.0.113.7")
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("request %d from one client: %d; want 429", e.srv.callbackBurst+1, last)
	}
	if s := from("203.0.113.8"); s == http.StatusTooManyRequests {
		t.Fatal("another client is rate limited too; want a limit per client IP")
	}
}

// invalidationRecorder wraps the fake broker and records the token each
// Invalidate reports as failed.
type invalidationRecorder struct {
	*fakeTokens
	mu     sync.Mutex
	failed []string
}

func (r *invalidationRecorder) Invalidate(ctx context.Context, ns, appid, failed, source string) (broker.Token, error) {
	r.mu.Lock()
	r.failed = append(r.failed, failed)
	r.mu.Unlock()
	return r.fakeTokens.Invalidate(ctx, ns, appid, failed, source)
}

func (r *invalidationRecorder) reported() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.failed...)
}

// TestPhoneRetryOnlyOnCredentialErrors: 40001, 42001 and 40014 report the
// token that failed (a conditional refresh) and retry once; any other
// errcode is answered without touching the broker's token.
func TestPhoneRetryOnlyOnCredentialErrors(t *testing.T) {
	var rec *invalidationRecorder
	e := newEnv(t, withTokens(func(e *env) Tokens {
		rec = &invalidationRecorder{fakeTokens: e.fake}
		return rec
	}))
	d := e.miniLogin("zoe", "Zoe", "")
	for i, errcode := range []int{40001, 42001, 40014} {
		used, err := e.fake.AccessToken(testNS, mpAppID)
		if err != nil {
			t.Fatal(err)
		}
		calls := e.sim.Calls("getuserphonenumber", mpAppID)
		e.sim.Fail("getuserphonenumber", 1, wechattest.Fault{Errcode: errcode})
		code := e.sim.MintPhoneCode(mpAppID, "1330013300"+strconv.Itoa(i))
		decodeData[phoneView](t, e.post(routeWxPhone, d.AccessToken, map[string]string{"code": code}))
		if got := rec.reported(); len(got) != i+1 || got[i] != used.AccessToken {
			t.Fatalf("errcode %d: Invalidate reported %d tokens, last matching the failed one: %v; want the token that failed",
				errcode, len(got), len(got) > i && got[i] == used.AccessToken)
		}
		if n := e.sim.Calls("getuserphonenumber", mpAppID) - calls; n != 2 {
			t.Fatalf("errcode %d: %d calls; want 2 (one retry)", errcode, n)
		}
	}
	before := len(rec.reported())
	calls := e.sim.Calls("getuserphonenumber", mpAppID)
	r := e.post(routeWxPhone, d.AccessToken, map[string]string{"code": "nope"})
	if r.Status != http.StatusBadRequest || r.Errcode == 0 {
		t.Fatalf("unknown phone code: %d errcode %d; want 400 with the errcode", r.Status, r.Errcode)
	}
	if n := e.sim.Calls("getuserphonenumber", mpAppID) - calls; n != 1 {
		t.Errorf("unknown phone code: %d calls; want 1 (no retry)", n)
	}
	if got := len(rec.reported()); got != before {
		t.Errorf("unknown phone code: %d Invalidate calls; want none", got-before)
	}
}

// TestDecryptWithUnreadableSessionKeyAsksForLogin: a stored session_key
// that no longer opens (the AES key was rotated) means "log in again" (401),
// as docs/LOGIN.md promises, not an internal error.
func TestDecryptWithUnreadableSessionKeyAsksForLogin(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	d := e.miniLogin("ada", "Ada", "")
	uid := e.uid(d.User.ID)
	u, err := e.srv.users.loadUser(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	field := fieldSessionKey + mpAppID
	sk, err := e.srv.users.secret(u, field)
	if err != nil {
		t.Fatal(err)
	}
	ed, iv := encryptUserData(t, sk, []byte(`{"openId":"x","watermark":{"appid":"`+mpAppID+`"}}`))
	oldKey := make([]byte, 32)
	for i := range oldKey {
		oldKey[i] = byte(i)
	}
	old, err := newSealer(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, e.srv.store.keys.user(uid), field, old.Seal(sk, field+"|"+uid)).Err(); err != nil {
		t.Fatal(err)
	}
	r := e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": ed, "iv": iv})
	if r.Status != http.StatusUnauthorized || !strings.Contains(r.Message, "wx.login") {
		t.Fatalf("decrypt with a session_key sealed under another AES key: %d %q; want 401 asking to log in again", r.Status, r.Message)
	}
	// Logging in again stores a readable session_key.
	d = e.miniLogin("ada", "Ada", "")
	u, err = e.srv.users.loadUser(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if sk, err = e.srv.users.secret(u, field); err != nil || sk == "" {
		t.Fatalf("session_key after a new login = %q, %v", sk, err)
	}
}
