package login

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

func TestMiniProgramLoginNewAndReturningUser(t *testing.T) {
	e := newEnv(t)
	before := e.clock.Now()
	first := e.miniLogin("alice", "张三", "https://thirdwx.qlogo.cn/a.png")
	if first.TokenType != "Bearer" || first.ExpiresIn != int64((2*time.Hour)/time.Second) ||
		first.AccessToken == "" || first.RefreshToken == "" {
		t.Fatalf("login data = %+v; want Bearer tokens expiring in 7200 s", first)
	}
	u := first.User
	if u.ID == "" || u.OpenID != e.sim.OpenID(mpAppID, "alice") || u.Nickname != "张三" ||
		u.Avatar != "https://thirdwx.qlogo.cn/a.png" {
		t.Fatalf("user = %+v; want alice's openid, nickname and avatar", u)
	}
	if u.CreatedAt != before.UTC().Format("2006-01-02T15:04:05.000Z07:00") {
		t.Errorf("created_at = %q; want %q", u.CreatedAt, before.UTC().Format(time.RFC3339))
	}

	e.clock.Advance(time.Hour)
	again := e.miniLogin("alice", "李四", "https://thirdwx.qlogo.cn/b.png")
	if again.User.ID != u.ID || again.User.Nickname != "李四" || again.User.Avatar != "https://thirdwx.qlogo.cn/b.png" ||
		again.User.CreatedAt != u.CreatedAt {
		t.Fatalf("returning user = %+v; want id %s, updated nickname/avatar, created_at %s", again.User, u.ID, u.CreatedAt)
	}
	other := e.miniLogin("bob", "", "")
	if other.User.ID == u.ID {
		t.Fatalf("bob got alice's id %s", u.ID)
	}

	// The envelope matches the seed front end.
	r := e.call(http.MethodGet, e.URL, routeProfile, again.AccessToken, nil)
	p := decodeData[profileView](t, r)
	if p.ID != u.ID || p.Nickname != "李四" || r.Message != "success" {
		t.Fatalf("profile = %+v (%q); want id %s, nickname 李四", p, r.Message, u.ID)
	}
	if now := e.clock.Now().UnixMilli(); r.Timestamp != now {
		t.Errorf("timestamp = %d; want %d (ms)", r.Timestamp, now)
	}

	// session_key is stored, sealed: no Redis value holds it in clear.
	usr, err := e.srv.users.loadUser(t.Context(), e.uid(u.ID))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := e.srv.users.secret(usr, fieldSessionKey+mpAppID)
	if err != nil || sk == "" {
		t.Fatalf("session_key = %q, %v; want it stored", sk, err)
	}
	assertRedisLacks(t, e, sk)

	assertLoginCount(t, e, metrics.FlowMiniProgram, metrics.ResultSuccess, 3)
}

// assertRedisLacks fails when any string or hash value in Redis contains secret.
func assertRedisLacks(t *testing.T, e *env, secret string) {
	t.Helper()
	ctx := t.Context()
	keys, err := e.rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, secret) {
			t.Fatalf("redis key %q contains a secret", k)
		}
		switch e.rdb.Type(ctx, k).Val() {
		case "string":
			if strings.Contains(e.rdb.Get(ctx, k).Val(), secret) {
				t.Fatalf("redis key %q holds a secret in clear", k)
			}
		case "hash":
			for f, v := range e.rdb.HGetAll(ctx, k).Val() {
				if strings.Contains(v, secret) {
					t.Fatalf("redis hash %q field %q holds a secret in clear", k, f)
				}
			}
		}
	}
}

func assertLoginCount(t *testing.T, e *env, flow, result string, want float64) {
	t.Helper()
	got := counterValue(t, e, "wxbroker_login_total", map[string]string{"flow": flow, "result": result})
	if got != want {
		t.Errorf("wxbroker_login_total{flow=%q,result=%q} = %v; want %v", flow, result, got, want)
	}
}

func counterValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				sum += m.GetCounter().GetValue()
			}
			if m.GetHistogram() != nil {
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func TestMiniProgramLoginErrors(t *testing.T) {
	e := newEnv(t)
	used := e.sim.MintLoginCode(mpAppID, "carol")
	e.post(routeWxLogin, "", map[string]string{"code": used})
	stale := e.sim.MintLoginCode(mpAppID, "carol")
	e.clock.Advance(6 * time.Minute) // js codes live 5 minutes
	risky := e.sim.MintRiskyLoginCode(mpAppID, "mallory")

	tests := []struct {
		name    string
		body    any
		status  int
		errcode int
		msg     string
	}{
		{"code reused", map[string]string{"code": used}, 401, 40163, "(错误码: 40163)"},
		{"code expired", map[string]string{"code": stale}, 401, 40029, "微信登录失败: "},
		{"unknown code", map[string]string{"code": "0a1b2c3d4e5f"}, 401, 40029, "(错误码: 40029)"},
		{"high-risk user", map[string]string{"code": risky}, 401, 40226, "(错误码: 40226)"},
		{"empty body", nil, 400, 0, "code"},
		{"not json", "{code:", 400, 0, "JSON"},
		{"missing code", map[string]string{"nickName": "x"}, 400, 0, "wx.login"},
		{"code with spaces", map[string]string{"code": "a b"}, 400, 0, "code"},
		{"nickname too long", map[string]string{"code": "abc", "nickName": strings.Repeat("名", 65)}, 400, 0, "nickName"},
		{"avatar not http", map[string]string{"code": "abc", "avatarUrl": "javascript:alert(1)"}, 400, 0, "avatarUrl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.post(routeWxLogin, "", tt.body)
			if r.Status != tt.status || r.Code != tt.status || r.Errcode != tt.errcode || !strings.Contains(r.Message, tt.msg) {
				t.Fatalf("reply = status %d %+v; want %d, errcode %d, message containing %q", r.Status, r, tt.status, tt.errcode, tt.msg)
			}
			if r.Error != http.StatusText(tt.status) || r.Timestamp == 0 || len(r.Data) != 0 {
				t.Errorf("error envelope = %+v; want error %q, a timestamp, no data", r, http.StatusText(tt.status))
			}
			if tt.errcode != 0 && (!strings.Contains(r.Hint, " / ") || r.RID == "") {
				t.Errorf("hint = %q, rid = %q; want a bilingual hint and the rid", r.Hint, r.RID)
			}
		})
	}
	assertLoginCount(t, e, metrics.FlowMiniProgram, resultRejected, 4)
}

func TestAccessTokenVerifiesThroughJWKS(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("dave", "Dave", "")
	r, err := e.http.Get(e.URL + routeJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var set struct {
		Keys []struct{ Kty, Crv, X, Kid, Alg, Use string } `json:"keys"`
	}
	if err := json.NewDecoder(r.Body).Decode(&set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("jwks = %+v, %v; want one key", set, err)
	}
	k := set.Keys[0]
	if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || k.Use != "sig" || k.Kid == "" {
		t.Fatalf("jwk = %+v; want OKP/Ed25519/EdDSA/sig with a kid", k)
	}
	x, err := base64.RawURLEncoding.DecodeString(k.X)
	if err != nil || len(x) != ed25519.PublicKeySize {
		t.Fatalf("jwk x = %q: %v", k.X, err)
	}
	var c jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(d.AccessToken, &c, func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != k.Kid {
			t.Errorf("kid = %v; want %s", tok.Header["kid"], k.Kid)
		}
		return ed25519.PublicKey(x), nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer("wxbroker"), jwt.WithAudience("wxbroker"),
		jwt.WithTimeFunc(e.clock.Now), jwt.WithExpirationRequired())
	if err != nil || !tok.Valid {
		t.Fatalf("verify through JWKS: %v", err)
	}
	if c.Subject != d.User.ID || c.ID == "" || c.IssuedAt == nil ||
		!c.ExpiresAt.Equal(e.clock.Now().Add(2*time.Hour)) {
		t.Fatalf("claims = %+v; want sub %s, a jti, iat and exp = now+2h", c, d.User.ID)
	}
}

func TestPhoneNumberRetriesOnceOnInvalidCredential(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("erin", "Erin", "")
	code := e.sim.MintPhoneCode(mpAppID, "13800138000")
	e.sim.Fail("getuserphonenumber", 1, wechattest.Fault{Errcode: 40001})
	r := e.post(routeWxPhone, d.AccessToken, map[string]string{"code": code})
	p := decodeData[phoneView](t, r)
	if p.PurePhoneNumber != "13800138000" || p.CountryCode != "86" {
		t.Fatalf("phone = %+v; want 13800138000 / 86", p)
	}
	if inv := e.fake.Invalidations(); len(inv) != 1 || inv[0] != metrics.SourceLogin {
		t.Fatalf("Invalidate calls = %v; want exactly one with source %q", inv, metrics.SourceLogin)
	}
	if n := e.sim.Calls("getuserphonenumber", mpAppID); n != 2 {
		t.Fatalf("getuserphonenumber calls = %d; want 2 (one retry)", n)
	}
	prof := decodeData[profileView](t, e.call(http.MethodGet, e.URL, routeProfile, d.AccessToken, nil))
	if prof.PhoneNumber != p.PhoneNumber {
		t.Errorf("profile phone = %q; want %q", prof.PhoneNumber, p.PhoneNumber)
	}

	// A second 40001 after the retry is not retried again.
	code = e.sim.MintPhoneCode(mpAppID, "13900139000")
	e.sim.Fail("getuserphonenumber", 2, wechattest.Fault{Errcode: 40001})
	r = e.post(routeWxPhone, d.AccessToken, map[string]string{"code": code})
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("status = %d (%s); want 503", r.Status, r.Message)
	}
	if inv := e.fake.Invalidations(); len(inv) != 2 {
		t.Fatalf("Invalidate calls = %d; want 2 (one per request)", len(inv))
	}
	if n := e.sim.Calls("getuserphonenumber", mpAppID); n != 4 {
		t.Fatalf("getuserphonenumber calls = %d; want 4", n)
	}

	// Bad input and a bad code.
	if r := e.post(routeWxPhone, d.AccessToken, map[string]string{}); r.Status != 400 {
		t.Errorf("no code: status %d; want 400", r.Status)
	}
	if r := e.post(routeWxPhone, d.AccessToken, map[string]string{"code": "nope"}); r.Status != 400 || r.Errcode == 0 {
		t.Errorf("unknown code: status %d errcode %d; want 400 with the errcode", r.Status, r.Errcode)
	}
	if r := e.post(routeWxPhone, "", map[string]string{"code": code}); r.Status != 401 {
		t.Errorf("no bearer: status %d; want 401", r.Status)
	}
	assertLoginCount(t, e, metrics.FlowPhone, metrics.ResultSuccess, 1)
}

// encryptUserData does what WeChat does to open data: AES-128-CBC with the
// session_key, PKCS#7.
func encryptUserData(t *testing.T, sessionKey string, plain []byte) (string, string) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(sessionKey)
	if err != nil {
		t.Fatalf("session_key is not base64: %v", err)
	}
	iv := bytes.Repeat([]byte{7}, 16)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	pad := 16 - len(plain)%16
	buf := append(append([]byte(nil), plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf), base64.StdEncoding.EncodeToString(iv)
}

func TestDecryptWithStoredSessionKey(t *testing.T) {
	e := newEnv(t)
	d := e.miniLogin("frank", "Frank", "")
	usr, err := e.srv.users.loadUser(context.Background(), e.uid(d.User.ID))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := e.srv.users.secret(usr, fieldSessionKey+mpAppID)
	if err != nil {
		t.Fatal(err)
	}
	good, iv := encryptUserData(t, sk, []byte(`{"openId":"x","watermark":{"appid":"`+mpAppID+`","timestamp":1}}`))
	other, iv2 := encryptUserData(t, sk, []byte(`{"openId":"x","watermark":{"appid":"wx9999999999999999","timestamp":1}}`))
	tampered := []byte(good)
	tampered[10] ^= 1

	r := e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": good, "iv": iv})
	var got struct {
		OpenID string `json:"openId"`
	}
	if got = decodeData[struct {
		OpenID string `json:"openId"`
	}](t, r); got.OpenID != "x" {
		t.Fatalf("decrypted = %+v; want openId x", got)
	}
	for name, body := range map[string]map[string]string{
		"other app's watermark": {"encryptedData": other, "iv": iv2},
		"tampered":              {"encryptedData": string(tampered), "iv": iv},
		"missing iv":            {"encryptedData": good},
	} {
		if r := e.post(routeWxDecrypt, d.AccessToken, body); r.Status != http.StatusBadRequest {
			t.Errorf("%s: status %d (%s); want 400", name, r.Status, r.Message)
		}
	}
	if r := e.post(routeWxDecrypt, "", map[string]string{"encryptedData": good, "iv": iv}); r.Status != 401 {
		t.Errorf("no bearer: status %d; want 401", r.Status)
	}
}
