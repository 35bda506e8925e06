package login

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wxbroker/wxbroker/metrics"
)

func (e *env) refreshWith(refreshToken string) reply {
	e.t.Helper()
	return e.post(routeRefresh, "", map[string]string{"refresh_token": refreshToken})
}

func (e *env) profileStatus(base, access string) int {
	e.t.Helper()
	return e.call(http.MethodGet, base, routeProfile, access, nil).Status
}

func TestRefreshRotatesAndDetectsReuse(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("grace", "Grace", "")

	p1 := decodeData[loginData](t, e.refreshWith(d.RefreshToken))
	if p1.RefreshToken == d.RefreshToken || p1.AccessToken == d.AccessToken || p1.TokenType != "Bearer" || p1.ExpiresIn != 7200 {
		t.Fatalf("refresh = %+v; want a new Bearer pair", p1)
	}
	// A retry of the same (now rotated) token within the grace window gets the same pair.
	e.clock.Advance(time.Second)
	retry := decodeData[loginData](t, e.refreshWith(d.RefreshToken))
	if retry.RefreshToken != p1.RefreshToken || retry.AccessToken != p1.AccessToken {
		t.Fatalf("retry within the window = %+v; want the pair of the first refresh", retry)
	}
	p2 := decodeData[loginData](t, e.refreshWith(p1.RefreshToken))
	if e.profileStatus(e.URL, p2.AccessToken) != 200 {
		t.Fatal("new access token rejected")
	}

	// Reuse of the rotated p1 after the window: the whole family is revoked.
	e.clock.Advance(e.cfg.Login.JWT.RefreshReuseWindow + time.Second)
	if r := e.refreshWith(p1.RefreshToken); r.Status != 401 || !strings.Contains(r.Message, "reused") {
		t.Fatalf("reuse: status %d %q; want 401 naming the reuse", r.Status, r.Message)
	}
	if r := e.refreshWith(p2.RefreshToken); r.Status != 401 {
		t.Fatalf("current refresh token after reuse: status %d; want 401 (family revoked)", r.Status)
	}
	if s := e.profileStatus(e.URL, p2.AccessToken); s != 401 {
		t.Fatalf("access token of a revoked family: status %d; want 401", s)
	}
	assertLoginCount(t, e, metrics.FlowRefresh, resultReuse, 1)

	// Other logins of the same user are unaffected.
	d2 := e.miniLogin("grace", "Grace", "")
	if e.profileStatus(e.URL, d2.AccessToken) != 200 {
		t.Fatal("a fresh login after a revoked family is rejected")
	}
	if r := e.refreshWith("not-a-token"); r.Status != 401 {
		t.Errorf("unknown refresh token: status %d; want 401", r.Status)
	}
	if r := e.post(routeRefresh, "", nil); r.Status != 400 {
		t.Errorf("no credential: status %d; want 400", r.Status)
	}
}

func TestConcurrentRefreshGetsOnePair(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("heidi", "Heidi", "")
	const n = 8
	var wg sync.WaitGroup
	got := make([]reply, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = e.refreshWith(d.RefreshToken)
		}()
	}
	wg.Wait()
	first := decodeData[loginData](t, got[0])
	for i, r := range got {
		p := decodeData[loginData](t, r)
		if p.RefreshToken != first.RefreshToken || p.AccessToken != first.AccessToken {
			t.Fatalf("reply %d got another pair; want all %d retries to share one", i, n)
		}
	}
	if e.profileStatus(e.URL, first.AccessToken) != 200 {
		t.Fatal("shared pair rejected")
	}
}

func TestRefreshWithExpiredBearer(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("ivan", "Ivan", "")
	e.clock.Advance(e.cfg.Login.JWT.AccessTTL + time.Minute) // expired, within access_refresh_leeway
	if s := e.profileStatus(e.URL, d.AccessToken); s != 401 {
		t.Fatalf("expired access token: status %d; want 401", s)
	}
	r := e.post(routeRefresh, d.AccessToken, nil)
	p := decodeData[loginData](t, r)
	if e.profileStatus(e.URL, p.AccessToken) != 200 {
		t.Fatal("access token from a Bearer refresh rejected")
	}
	// The refresh token of the new pair works too; the old access token is spent.
	decodeData[loginData](t, e.refreshWith(p.RefreshToken))
	e.clock.Advance(e.cfg.Login.JWT.RefreshReuseWindow + time.Second)
	if r := e.post(routeRefresh, d.AccessToken, nil); r.Status != 401 {
		t.Fatalf("reusing a spent access token for refresh: status %d; want 401", r.Status)
	}
}

func TestLogoutHonouredByAnotherReplica(t *testing.T) {
	e := newEnv(t)
	second := e.addReplica()
	d := e.miniLogin("judy", "Judy", "")
	if s := e.profileStatus(second, d.AccessToken); s != 200 {
		t.Fatalf("replica rejects a valid token: %d", s)
	}
	r := e.post(routeLogout, d.AccessToken, nil)
	if r.Status != 200 || r.Message != "退出成功" {
		t.Fatalf("logout = %d %q; want 200 退出成功", r.Status, r.Message)
	}
	if s := e.profileStatus(second, d.AccessToken); s != 401 {
		t.Fatalf("replica after logout: status %d; want 401", s)
	}
	if r := e.call(http.MethodPost, second, routeRefresh, "", map[string]string{"refresh_token": d.RefreshToken}); r.Status != 401 {
		t.Fatalf("replica refresh after logout: status %d; want 401", r.Status)
	}
	if r := e.call(http.MethodPost, second, routeLogout, d.AccessToken, nil); r.Status != 401 {
		t.Fatalf("second logout: status %d; want 401", r.Status)
	}
	// Logout with only a refresh token revokes its family.
	d2 := e.miniLogin("judy", "Judy", "")
	if r := e.post(routeLogout, "", map[string]string{"refresh_token": d2.RefreshToken}); r.Status != 200 {
		t.Fatalf("logout by refresh token: %d", r.Status)
	}
	if s := e.profileStatus(second, d2.AccessToken); s != 401 {
		t.Fatalf("access token of a logged-out family: status %d; want 401", s)
	}
	assertLoginCount(t, e, metrics.FlowLogout, metrics.ResultSuccess, 2)
}

func TestForgedAccessTokensRejected(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("ken", "Ken", "")
	parts := strings.Split(d.AccessToken, ".")
	var claims jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(d.AccessToken, &claims); err != nil {
		t.Fatal(err)
	}
	forged := jwt.MapClaims{}
	for k, v := range claims {
		forged[k] = v
	}
	forged["sub"] = "1"

	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, forged).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, forged)
	hs.Header["kid"] = e.srv.signer.kid
	hsTok, err := hs.SignedString([]byte(e.srv.signer.pub))
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	other := jwt.NewWithClaims(jwt.SigningMethodEdDSA, forged)
	other.Header["kid"] = e.srv.signer.kid
	otherTok, _ := other.SignedString(otherKey)
	wrongIss := jwt.MapClaims{}
	for k, v := range claims {
		wrongIss[k] = v
	}
	wrongIss["iss"] = "someone-else"
	wi := jwt.NewWithClaims(jwt.SigningMethodEdDSA, wrongIss)
	wi.Header["kid"] = e.srv.signer.kid
	wiTok, _ := wi.SignedString(e.srv.signer.priv)
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tamperedPayload := strings.Replace(string(payload), `"sub":"`, `"sub":"9`, 1)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(tamperedPayload)) + "." + parts[2]

	tests := map[string]string{
		"alg none":                  none,
		"HS256 with the public key": hsTok,
		"another Ed25519 key":       otherTok,
		"wrong issuer":              wiTok,
		"tampered payload":          tampered,
		"garbage":                   "abc.def.ghi",
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			if s := e.profileStatus(e.URL, tok); s != 401 {
				t.Fatalf("profile with %s: status %d; want 401", name, s)
			}
			if r := e.post(routeRefresh, tok, nil); r.Status != 401 {
				t.Fatalf("refresh with %s: status %d; want 401", name, r.Status)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		e.clock.Advance(2*time.Hour + time.Second)
		if s := e.profileStatus(e.URL, d.AccessToken); s != 401 {
			t.Fatalf("expired token: status %d; want 401", s)
		}
	})
}
