package login

import (
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestDebugLogsLeakNoSecret runs every flow, failures included, with a
// debug-level logger and scans its output for every secret involved.
func TestDebugLogsLeakNoSecret(t *testing.T) {
	e := newEnv(t, withCallbackBurst(100))
	var secrets []string
	keep := func(s ...string) { secrets = append(secrets, s...) }
	keep(mpSecret, webSecret, e.aesKey)
	block, _ := pem.Decode([]byte(e.signPEM))
	keep(base64.StdEncoding.EncodeToString(block.Bytes)[:40])
	keep(base64.RawURLEncoding.EncodeToString(e.srv.signer.priv.Seed()), base64.StdEncoding.EncodeToString(e.srv.signer.priv.Seed()))

	// Mini program: login, failures, phone with a forced 40001, decrypt, refresh, logout.
	code := e.sim.MintLoginCode(mpAppID, "pat")
	keep(code)
	d := decodeData[loginData](t, e.post(routeWxLogin, "", map[string]string{"code": code, "nickName": "Pat"}))
	keep(d.AccessToken, d.RefreshToken)
	e.post(routeWxLogin, "", map[string]string{"code": code}) // 40163
	usr, err := e.srv.users.loadUser(t.Context(), "1")
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := e.srv.users.secret(usr, fieldSessionKey+mpAppID)
	keep(sk)
	phoneCode := e.sim.MintPhoneCode(mpAppID, "13700137000")
	keep(phoneCode)
	tok, _ := e.fake.AccessToken(testNS, mpAppID)
	keep(tok.AccessToken)
	e.sim.Fail("getuserphonenumber", 1, wechattest.Fault{Errcode: 40001})
	decodeData[phoneView](t, e.post(routeWxPhone, d.AccessToken, map[string]string{"code": phoneCode}))
	tok2, _ := e.fake.AccessToken(testNS, mpAppID)
	keep(tok2.AccessToken)
	ed, iv := encryptUserData(t, sk, []byte(`{"watermark":{"appid":"`+mpAppID+`"}}`))
	e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": ed, "iv": iv})
	e.post(routeWxDecrypt, d.AccessToken, map[string]string{"encryptedData": ed + "AA", "iv": iv})
	p := decodeData[loginData](t, e.refreshWith(d.RefreshToken))
	keep(p.AccessToken, p.RefreshToken)
	e.post(routeLogout, p.AccessToken, nil)
	e.refreshWith(p.RefreshToken)

	// Website: login, declined, attacks.
	sess := e.webLogin("quinn")
	keep(sess.Value)
	wu, err := e.srv.users.loadUser(t.Context(), "2")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := e.srv.users.secret(wu, fieldOAuth+webAppID)
	var rec oauthRecord
	if err := jsonUnmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	keep(rec.AccessToken, rec.RefreshToken)
	c, cb := e.startWeb("", "quinn", true)
	keep(c.Value)
	e.get(cb) // no cookie
	e.get(cb, c)
	e.get(cb, c) // reused
	e.call(http.MethodGet, e.URL, routeProfile, "", nil)

	logs := e.logs.String()
	if !strings.Contains(logs, `"level":"debug"`) {
		t.Fatalf("no debug lines logged; the scan would prove nothing:\n%s", logs)
	}
	for _, s := range secrets {
		if s == "" {
			t.Fatal("empty secret in the list")
		}
		if strings.Contains(logs, s) {
			t.Errorf("debug logs contain a secret (%.6s…)", s)
		}
	}
}
