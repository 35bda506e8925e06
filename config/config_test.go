package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.yaml.err from the current output")

// testEnv is the environment the tests parse with; the values double as
// secrets that must never show up in output.
var testEnv = map[string]string{
	"REDIS_PASSWORD": "redis-pw-7f3a9c",
	"WX_SECRET_PROD": "wx-prod-secret-b41d2e",
	"EMPTY":          "",
	"PORT":           "9000",
}

func lookupTestEnv(name string) (string, bool) {
	v, ok := testEnv[name]
	return v, ok
}

func loadTestdata(t *testing.T, path string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parse(data, filepath.Dir(path), lookupTestEnv)
}

func TestParseGood(t *testing.T) {
	c, err := loadTestdata(t, "testdata/good.yaml")
	if err != nil {
		t.Fatalf("parse(good.yaml) = %v", err)
	}
	oa, ok := c.App("prod", "wx1111111111111111")
	if !ok {
		t.Fatal(`App("prod", "wx1111111111111111") not found`)
	}
	web, _ := c.App("prod", "wx2222222222222222")
	mp, _ := c.App("prod", "wx04a7af67c8f47620")
	st, _ := c.App("staging", "wx3333333333333333")
	checks := []struct {
		name      string
		got, want any
	}{
		{"redis password from ${REDIS_PASSWORD}", c.Redis.Password.Reveal(), testEnv["REDIS_PASSWORD"]},
		{"secret from ${WX_SECRET_PROD}", mp.Secret.Reveal(), testEnv["WX_SECRET_PROD"]},
		{"secret_file trimmed", oa.Secret.Reveal(), "oa-secret-value"},
		{"secret_file resolved against the config dir", oa.SecretFile, filepath.Join("testdata", "secrets", "oa.secret")},
		{"$$ is a literal $", web.Secret.Reveal(), "literal$secret"},
		{"${VAR:-default} with VAR unset", st.Secret.Reveal(), "staging-secret"},
		{"token_mode default", mp.TokenMode, ModeStable},
		{"token_mode set", oa.TokenMode, ModeClassic},
		{"tickets", strings.Join(oa.Tickets, ","), "jsapi,wx_card"},
		{"signing key read", strings.HasPrefix(c.Login.JWT.SigningKey.Reveal(), "-----BEGIN PRIVATE KEY-----"), true},
		{"jwt issuer default", c.Login.JWT.Issuer, "wxbroker"},
		{"cookie_secure default", *c.Login.Web.CookieSecure, true},
		{"qrconnect_url default", c.Login.Web.QRConnectURL, "https://open.weixin.qq.com/connect/qrconnect"},
		{"login enabled", c.LoginEnabled(), true},
		{"before_expiry", c.Refresh.BeforeExpiry, Portion{Fraction: 0.25}},
		{"apps", len(c.Apps()), 4},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v; want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := parse([]byte(`
redis: {addrs: ["127.0.0.1:6379"]}
leader:                      # present but empty: keeps the defaults
namespaces:
  prod:
    apps: [{appid: wx04a7af67c8f47620, secret: s, kind: miniprogram}]
`), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("parse = %v", err)
	}
	host, _ := os.Hostname()
	checks := []struct {
		name      string
		got, want any
	}{
		{"instance_id", c.InstanceID, fmt.Sprintf("%s-%d", host, os.Getpid())},
		{"listen", c.Listen, "127.0.0.1:8080"},
		{"public_listen", c.PublicListen, ""},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"redis.key_prefix", c.Redis.KeyPrefix, "wxbroker"},
		{"leader.lock_ttl", c.Leader.LockTTL, 15 * time.Second},
		{"leader.renew_interval", c.Leader.RenewInterval, 5 * time.Second},
		{"wechat.base_url", c.WeChat.BaseURL, "https://api.weixin.qq.com"},
		{"wechat.fallback_urls", strings.Join(c.WeChat.FallbackURLs, ","), "https://api2.weixin.qq.com"},
		{"wechat.timeout", c.WeChat.Timeout, 5 * time.Second},
		{"refresh.before_expiry", c.Refresh.BeforeExpiry, Portion{Fraction: 0.25}},
		{"refresh.jitter", c.Refresh.Jitter, Portion{Fraction: 0.10}},
		{"refresh.concurrency", c.Refresh.Concurrency, 32},
		{"refresh.force_min_interval", c.Refresh.ForceMinInterval, 30 * time.Second},
		{"refresh.force_daily_cap", c.Refresh.ForceDailyCap, 20},
		{"refresh.stable_rotation_window", c.Refresh.StableRotationWindow, 5 * time.Minute},
		{"token_mode", c.Namespaces["prod"].Apps[0].TokenMode, ModeStable},
		{"login.jwt.issuer", c.Login.JWT.Issuer, "wxbroker"},
		{"login.jwt.access_ttl", c.Login.JWT.AccessTTL, 2 * time.Hour},
		{"login.jwt.refresh_ttl", c.Login.JWT.RefreshTTL, 720 * time.Hour},
		{"login.web.qrconnect_url", c.Login.Web.QRConnectURL, "https://open.weixin.qq.com/connect/qrconnect"},
		{"login.web.cookie_secure", *c.Login.Web.CookieSecure, true},
		{"login enabled", c.LoginEnabled(), false},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v; want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestExplicitValuesOverrideDefaults(t *testing.T) {
	c, err := parse([]byte(`
listen: ":${PORT}"
redis: {addrs: ["127.0.0.1:6379"], db: 0}
wechat: {fallback_urls: []}
refresh: {before_expiry: 30m, concurrency: 4}
namespaces:
  prod:
    apps: [{appid: wx04a7af67c8f47620, secret: "${EMPTY:-fallback}", kind: miniprogram}]
login:
  web: {cookie_secure: false}
`), "", lookupTestEnv)
	if err != nil {
		t.Fatalf("parse = %v", err)
	}
	if c.Listen != ":9000" {
		t.Errorf("listen = %q; want %q", c.Listen, ":9000")
	}
	if len(c.WeChat.FallbackURLs) != 0 {
		t.Errorf("fallback_urls = %v; want empty", c.WeChat.FallbackURLs)
	}
	if want := (Portion{Duration: 30 * time.Minute}); c.Refresh.BeforeExpiry != want {
		t.Errorf("before_expiry = %v; want %v", c.Refresh.BeforeExpiry, want)
	}
	if c.Refresh.Concurrency != 4 {
		t.Errorf("concurrency = %d; want 4", c.Refresh.Concurrency)
	}
	if got := c.Namespaces["prod"].Apps[0].Secret.Reveal(); got != "fallback" {
		t.Errorf("secret = %q; want %q (${EMPTY:-fallback} with EMPTY empty)", got, "fallback")
	}
	if *c.Login.Web.CookieSecure {
		t.Error("cookie_secure = true; want false as written")
	}
}

// TestBadConfigs parses every testdata/bad/*.yaml and compares the error with
// its golden *.yaml.err file. Run with -update to rewrite the golden files.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			_, err := loadTestdata(t, f)
			if err == nil {
				t.Fatalf("parse(%s) succeeded; want an error", f)
			}
			got := err.Error() + "\n"
			golden := f + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -run TestBadConfigs -update)", err)
			}
			if got != string(want) {
				t.Errorf("parse(%s) error:\n%s\nwant:\n%s", f, got, want)
			}
		})
	}
}

func TestValidationErrorListsEveryProblem(t *testing.T) {
	_, err := loadTestdata(t, "testdata/bad/many_problems.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *ValidationError", err)
	}
	keys := map[string]bool{}
	for _, p := range ve.Problems {
		keys[p.Key] = true
		if p.Message == "" || p.Fix == "" {
			t.Errorf("problem %+v lacks a message or a fix", p)
		}
	}
	for _, k := range []string{
		"listen", "log.level", "leader.renew_interval", "refresh.concurrency",
		"namespaces.prod.apps[0].appid", "namespaces.prod.apps[0].secret", "namespaces.prod.apps[0].kind",
		"namespaces.prod.apps[1].token_mode", "clients[0].key_sha256", "clients[0].allow[0]",
	} {
		if !keys[k] {
			t.Errorf("no problem names %s; got %v", k, err)
		}
	}
	if got := strings.Count(err.Error(), "\n"); got != len(ve.Problems) {
		t.Errorf("Error() has %d lines after the summary; want one per problem (%d)", got, len(ve.Problems))
	}
}

func TestLoadWrapsValidationError(t *testing.T) {
	_, err := Load("testdata/bad/appid_format.yaml")
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 {
		t.Fatalf("Load = %v; want a wrapped *ValidationError with 1 problem", err)
	}
	if !strings.HasPrefix(err.Error(), "config: testdata/bad/appid_format.yaml: invalid configuration") {
		t.Errorf("Load error %q does not name the file", err)
	}
	if _, err := Load("testdata/does-not-exist.yaml"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want os.ErrNotExist", err)
	}
}

func TestSecretsNeverShown(t *testing.T) {
	c, err := loadTestdata(t, "testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		testEnv["REDIS_PASSWORD"], testEnv["WX_SECRET_PROD"], "oa-secret-value", "literal$secret", "staging-secret",
		strings.TrimSpace(c.Login.SessionKeyEncryptionKey.Reveal()),
		"PRIVATE KEY", c.Login.JWT.SigningKey.Reveal()[30:60],
	}
	// Break the config so that every secret-bearing field fails validation too.
	bad := *c
	bad.Login.JWT.SigningKey = Secret(testEnv["WX_SECRET_PROD"])
	bad.Login.SessionKeyEncryptionKey = Secret(testEnv["REDIS_PASSWORD"])
	verr := bad.Validate()
	if verr == nil {
		t.Fatal("Validate() = nil; want errors about the login keys")
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"Validate()": verr.Error(),
		"%v":         fmt.Sprintf("%v", *c),
		"%+v":        fmt.Sprintf("%+v", *c),
		"%#v":        fmt.Sprintf("%#v", *c),
		"%v apps":    fmt.Sprintf("%v %+v %#v", c.Apps()[0].App, *c.Apps()[1].App, *c.Apps()[2].App),
		"yaml":       string(y),
		"json":       string(j),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows secret %q:\n%s", name, s, out)
			}
		}
	}
	if !strings.Contains(outputs["yaml"], "<secret>") || !strings.Contains(outputs["%+v"], "<secret>") {
		t.Errorf("secrets are not masked as <secret>:\n%s", outputs["yaml"])
	}
}

func TestParsePortion(t *testing.T) {
	tests := []struct {
		in      string
		want    Portion
		wantErr bool
	}{
		{"25%", Portion{Fraction: 0.25}, false},
		{"12.5%", Portion{Fraction: 0.125}, false},
		{" 10 % ", Portion{Fraction: 0.10}, false},
		{"30m", Portion{Duration: 30 * time.Minute}, false},
		{"4m30s", Portion{Duration: 270 * time.Second}, false},
		{"abc%", Portion{}, true},
		{"30", Portion{}, true},
		{"", Portion{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePortion(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParsePortion(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
	if got := (Portion{Fraction: 0.25}).Of(2 * time.Hour); got != 30*time.Minute {
		t.Errorf("25%% of 2h = %v; want 30m", got)
	}
	if got := (Portion{Duration: time.Minute}).Of(2 * time.Hour); got != time.Minute {
		t.Errorf("1m of 2h = %v; want 1m", got)
	}
	for _, p := range []Portion{{Fraction: 0.25}, {Duration: 90 * time.Second}} {
		b, _ := json.Marshal(p)
		var back Portion
		if err := json.Unmarshal(b, &back); err != nil || back != p {
			t.Errorf("json round trip of %v = %v, %v", p, back, err)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	tests := []struct {
		in, want string
		errs     int
	}{
		{"plain", "plain", 0},
		{"${REDIS_PASSWORD}", testEnv["REDIS_PASSWORD"], 0},
		{"a-${PORT}-b", "a-9000-b", 0},
		{"$$", "$", 0},
		{"$${PORT}", "${PORT}", 0},
		{"pa$word", "pa$word", 0},
		{"end$", "end$", 0},
		{"${UNSET:-dflt}", "dflt", 0},
		{"${EMPTY:-dflt}", "dflt", 0},
		{"${EMPTY}", "", 0},
		{"${UNSET:-}", "", 0},
		{"${UNSET}", "", 0},
		{"${UNSET:?}", "", 1},
		{"${PORT:?}", "9000", 0},
		{"${BAD NAME}", "", 1},
		{"${OPEN", "${OPEN", 1},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, errs := expandEnv(tt.in, lookupTestEnv, false)
			if got != tt.want || len(errs) != tt.errs {
				t.Errorf("expandEnv(%q) = %q, %d errors; want %q, %d errors", tt.in, got, len(errs), tt.want, tt.errs)
			}
		})
	}
}

func TestClientAllows(t *testing.T) {
	c, err := loadTestdata(t, "testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	access := func(cl *Client) *Access {
		t.Helper()
		a, err := cl.Access(c)
		if err != nil {
			t.Fatalf("%s.Access: %v", cl.Name, err)
		}
		return a
	}
	order, sre := access(&c.Clients[0]), access(&c.Clients[1])
	tests := []struct {
		name      string
		a         *Access
		ns, appid string
		want      bool
	}{
		{"order exact", order, "prod", "wx04a7af67c8f47620", true},
		{"order other app", order, "prod", "wx1111111111111111", false},
		{"order namespace wildcard", order, "staging", "wx3333333333333333", true},
		{"sre everything", sre, "prod", "wx1111111111111111", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Allows(tt.ns, tt.appid); got != tt.want {
				t.Errorf("Allows(%q, %q) = %v; want %v", tt.ns, tt.appid, got, tt.want)
			}
		})
	}
	if got := strings.Join(order.Namespaces(), ","); got != "prod,staging" {
		t.Errorf("Namespaces = %q; want prod,staging", got)
	}
	if got := order.OnlyNamespace(); got != "" {
		t.Errorf("OnlyNamespace = %q; want none (two namespaces)", got)
	}
	if c.Clients[0].access != order {
		t.Error("Load did not compile the client's access once: Access built a new one")
	}
	if got := HashKey("demo"); got != "2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea" {
		t.Errorf("HashKey(demo) = %s", got)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	bad, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, name := range append(files, bad...) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parse(data, "testdata", lookupTestEnv)
		if err == nil && c == nil {
			t.Fatal("parse returned neither a config nor an error")
		}
		if err != nil && c != nil {
			t.Fatal("parse returned both a config and an error")
		}
	})
}

// TestAccessAllowsDoesNotAllocate pins the read path's cost: an allow check
// is map lookups with comparable keys, never a string built per request.
func TestAccessAllowsDoesNotAllocate(t *testing.T) {
	c, err := loadTestdata(t, "testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Clients[0].Access(c)
	if err != nil {
		t.Fatal(err)
	}
	// A miss, so every set is consulted; the names are long enough that a
	// joined "ns/appid" key would not fit the compiler's stack buffer.
	ns, appid := "a-namespace-that-is-not-configured", "wx1111111111111111"
	if n := testing.AllocsPerRun(100, func() { _ = a.Allows(ns, appid) }); n != 0 {
		t.Errorf("Allows allocates %v times per call; want 0", n)
	}
}
