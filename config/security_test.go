package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidationRedactsURLCredentials pins issue finding 4: a proxy password
// in wechat.base_url, a fallback URL or a login URL is never printed.
func TestValidationRedactsURLCredentials(t *testing.T) {
	const pw = "proxy-pw-31c7"
	yaml := `
redis: {addrs: ["user:` + pw + `@127.0.0.1:6379x"]}
wechat:
  base_url: "ftp://user:` + pw + `@proxy.example:3128/wx"
  fallback_urls: ["https://user:` + pw + `@proxy.example:3128", "http://user:` + pw + `@bad host/"]
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-prod, kind: miniprogram}]}}
`
	_, err := parse([]byte(yaml), "", lookupTestEnv)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("parse = %v; want a ValidationError", err)
	}
	if strings.Contains(err.Error(), pw) {
		t.Fatalf("validation error prints the proxy password:\n%s", err)
	}
	if !strings.Contains(err.Error(), "wechat.base_url") || !strings.Contains(err.Error(), "proxy.example") {
		t.Fatalf("validation error should still name the key and host:\n%s", err)
	}
	if got := RedactURL("http://u:" + pw + "@h:1/p"); strings.Contains(got, pw) || !strings.Contains(got, "u:xxxxx@h:1/p") {
		t.Errorf("RedactURL = %q", got)
	}
}

// TestValidationNeverEchoesRawKey pins finding 4: a raw client key pasted
// into key_sha256 is not shown, and the message says what it looks like.
func TestValidationNeverEchoesRawKey(t *testing.T) {
	const raw = "ck_live_0123456789-raw-client-key"
	yaml := `
redis: {addrs: ["127.0.0.1:6379"]}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-prod, kind: miniprogram}]}}
clients: [{name: svc, key_sha256: "` + raw + `", allow: ["prod/*"]}]
`
	_, err := parse([]byte(yaml), "", lookupTestEnv)
	if err == nil {
		t.Fatal("parse succeeded; want an error")
	}
	if strings.Contains(err.Error(), raw) || strings.Contains(err.Error(), "raw-client") {
		t.Fatalf("validation echoes the raw key:\n%s", err)
	}
	if !strings.Contains(err.Error(), "not a 64-hex-digit sha256; looks like a raw key?") {
		t.Fatalf("error = %s; want the raw-key hint", err)
	}
}

// TestSecretWithDollarBraceNotEchoed pins finding 4: a secret whose value
// contains "${" that is not a variable reference is reported without any
// fragment of it; a non-secret value still shows its reference.
func TestSecretWithDollarBraceNotEchoed(t *testing.T) {
	yaml := `
redis: {addrs: ["127.0.0.1:6379"], password: "Xy9${q-w+e}Zt"}
instance_id: "id-${not valid}"
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: "a${b c}d", kind: miniprogram}]}}
`
	_, err := parse([]byte(yaml), "", lookupTestEnv)
	if err == nil {
		t.Fatal("parse succeeded; want an error")
	}
	msg := err.Error()
	for _, frag := range []string{"q-w+e", "Xy9", "b c", "Zt"} {
		if strings.Contains(msg, frag) {
			t.Errorf("error shows secret fragment %q:\n%s", frag, msg)
		}
	}
	if !strings.Contains(msg, "redis.password") || !strings.Contains(msg, "value not shown") {
		t.Errorf("error should name redis.password without its value:\n%s", msg)
	}
	if !strings.Contains(msg, "not valid") {
		t.Errorf("a non-secret value should still be quoted:\n%s", msg)
	}
}

// TestFileModeProblems pins finding 8: secret files and a configuration file
// with inline secrets that other users may read are reported; private ones
// and a config without inline secrets are not.
func TestFileModeProblems(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("open.secret", "s3cr3t-from-file", 0o644)
	write("group.secret", "s3cr3t-from-file", 0o640)
	write("closed.secret", "s3cr3t-from-file", 0o600)
	base := `redis: {addrs: ["127.0.0.1:6379"], password_file: %s}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, %s, kind: miniprogram}]}}
`
	tests := []struct {
		name       string
		pwFile     string
		app        string
		configMode os.FileMode
		want       []string // substrings, one per expected problem
	}{
		{"all private", "closed.secret", "secret_file: closed.secret", 0o644, nil},
		{"world-readable secret file", "open.secret", "secret_file: closed.secret", 0o600,
			[]string{"redis.password_file", "readable by every user"}},
		{"group-readable secret file we own", "group.secret", "secret_file: closed.secret", 0o600,
			[]string{"redis.password_file", "readable by its group"}},
		{"inline secret in a readable config", "closed.secret", "secret: inline-s3cr3t", 0o644,
			[]string{"inline secret", "readable by every user"}},
		{"inline secret in a private config", "closed.secret", "secret: inline-s3cr3t", 0o600, nil},
		{"env secret in a readable config", "closed.secret", `secret: "${WX_SECRET_PROD}"`, 0o644, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfgPath := write("config.yaml", fmt.Sprintf(base, tt.pwFile, tt.app), tt.configMode)
			data, _ := os.ReadFile(cfgPath)
			c, err := parse(data, dir, lookupTestEnv)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got := FileModeProblems(cfgPath, c)
			if len(got) != len(tt.want)/2 {
				t.Fatalf("FileModeProblems = %v; want %d problem(s)", got, len(tt.want)/2)
			}
			for i := 0; i < len(tt.want); i += 2 {
				s := got[i/2].String()
				if !strings.Contains(s, tt.want[i]) || !strings.Contains(s, tt.want[i+1]) || !strings.Contains(s, "chmod 600") {
					t.Errorf("problem %q; want %q and %q and a chmod fix", s, tt.want[i], tt.want[i+1])
				}
				if strings.Contains(s, "s3cr3t") {
					t.Errorf("problem shows a secret: %s", s)
				}
			}
		})
	}
}

// TestSecuritySettingsValidated checks the new keys' validation and defaults.
func TestSecuritySettingsValidated(t *testing.T) {
	c, err := parse([]byte(`
redis: {addrs: ["127.0.0.1:6379"]}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-prod, kind: miniprogram}]}}
clients: [{name: svc, key_sha256: "`+HashKey("k")+`", allow: ["prod/*"]}]
`), "", lookupTestEnv)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Login
	if l.RateLimit != (LoginRateLimit{60, 20}) || l.JWT.RefreshReuseWindow.String() != "2s" ||
		l.JWT.AccessRefreshLeeway.String() != "5m0s" || len(l.TrustedProxies) != 0 ||
		!c.Clients[0].MayInvalidate() || c.Clients[0].InvalidateRate() != 60 {
		t.Fatalf("defaults = %+v, client %+v", l, c.Clients[0])
	}
	_, err = parse([]byte(`
redis: {addrs: ["127.0.0.1:6379"]}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-prod, kind: miniprogram}]}}
clients: [{name: svc, key_sha256: "`+HashKey("k")+`", allow: ["prod/*"], invalidate: false, invalidate_per_minute: -1}]
login:
  trusted_proxies: ["10.0.0.0/8", "192.0.2.1", "0.0.0.0/0", "not-an-ip"]
  rate_limit: {per_minute: -1}
  jwt: {refresh_reuse_window: 2m, access_refresh_leeway: 1000h}
`), "", lookupTestEnv)
	for _, want := range []string{
		"login.trusted_proxies[2]", "trusts every address", "login.trusted_proxies[3]",
		"login.rate_limit.per_minute", "login.jwt.refresh_reuse_window", "login.jwt.access_refresh_leeway",
		"clients[0].invalidate_per_minute",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if err != nil && (strings.Contains(err.Error(), "trusted_proxies[0]") || strings.Contains(err.Error(), "trusted_proxies[1]")) {
		t.Errorf("valid proxies reported:\n%v", err)
	}
	var lg Login
	lg.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.1", "2001:db8::/32"}
	if got := len(lg.TrustedProxyNets()); got != 3 {
		t.Errorf("TrustedProxyNets = %d nets; want 3", got)
	}
}

// TestRedactURLMasksQueryAndFragment: a configured URL is printed without
// its query values, fragment or userinfo password (before, only the
// password was masked and "?apikey=..." was shown in clear).
func TestRedactURLMasksQueryAndFragment(t *testing.T) {
	const s = "s3cr3t-9c1f"
	tests := []struct{ raw, want string }{
		{"https://api.weixin.qq.com", "https://api.weixin.qq.com"},
		{"https://proxy.example/wx?apikey=" + s, "https://proxy.example/wx?apikey=xxxxx"},
		{"https://u:" + s + "@proxy.example/?a=" + s + "&a=" + s + "&b=" + s + "#" + s,
			"https://u:xxxxx@proxy.example/?a=xxxxx&a=xxxxx&b=xxxxx#xxxxx"},
		{"http://u:" + s + "@bad host/?k=" + s, "http://xxxxx@bad host/?xxxxx"},
		{"https://proxy.example/?" + s + "&k=", "https://proxy.example/?xxxxx&k=xxxxx"},
	}
	for _, tt := range tests {
		got := RedactURL(tt.raw)
		if strings.Contains(got, s) {
			t.Errorf("RedactURL(%q) = %q; shows the secret", tt.raw, got)
		}
		if got != tt.want {
			t.Errorf("RedactURL(%q) = %q; want %q", tt.raw, got, tt.want)
		}
	}
}
