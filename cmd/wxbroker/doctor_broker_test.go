package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// runBroker runs a broker for cfg until the test ends.
func runBroker(t *testing.T, cfg *config.Config) *broker.Broker {
	t.Helper()
	wc, err := wechat.New(wechat.Options{BaseURL: cfg.WeChat.BaseURL, Timeout: cfg.WeChat.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	rdb := newRedis(cfg.Redis)
	t.Cleanup(func() { _ = rdb.Close() })
	return brokertest.Run(t, broker.Options{Config: cfg, Redis: rdb, WeChat: wc, Logger: zap.NewNop(),
		Metrics: metrics.New(prometheus.NewRegistry())})
}

func doctorConfig(t *testing.T, redisAddr, baseURL string) (string, *config.Config) {
	t.Helper()
	yaml := fmt.Sprintf(`instance_id: doctor-test
redis: {addrs: [%q], key_prefix: doc%d}
leader: {lock_ttl: 3s, renew_interval: 1s}
wechat: {base_url: %q, fallback_urls: [], timeout: 1s}
namespaces:
  prod:
    apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-value, kind: miniprogram}]
`, redisAddr, time.Now().UnixNano()%1e9, baseURL)
	path := filepath.Join(t.TempDir(), "wxbroker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

func TestDoctorLeaderAndApps(t *testing.T) {
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	sim.AddApp("wx04a7af67c8f47620", "s3cr3t-value")
	path, cfg := doctorConfig(t, rs.Addr, sim.URL)

	code, stdout, _ := runCmd(t, "doctor", "--config", path)
	if code != exitOK || !strings.Contains(stdout, "WARN leader   no broker holds the leader lock") {
		t.Errorf("doctor without a broker = %d:\n%s\nwant exit 0 and a no-leader warning", code, stdout)
	}

	b := runBroker(t, cfg)
	brokertest.WaitToken(t, b, "prod", "wx04a7af67c8f47620", 10*time.Second)
	calls := sim.Calls(wechat.APIToken, "wx0000000000000000")
	issued := sim.TokensIssued("wx04a7af67c8f47620")
	code, stdout, _ = runCmd(t, "doctor", "--config", path)
	for _, want := range []string{
		"ok   redis    reachable at " + rs.Addr,
		"ok   leader   doctor-test leads at epoch ",
		"ok   app      prod/wx04a7af67c8f47620 access_token: valid, generation 1",
		"ok   wechat   " + sim.URL + " answers (probe with a non-existent appid: errcode 40013",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
	if code != exitOK {
		t.Errorf("doctor = exit %d; want 0", code)
	}
	if got := sim.Calls(wechat.APIToken, "wx0000000000000000"); got != calls+1 {
		t.Errorf("doctor made %d probe calls; want 1", got-calls)
	}
	if got := sim.TokensIssued("wx04a7af67c8f47620"); got != issued {
		t.Errorf("doctor caused %d token fetches for the real app; want none", got-issued)
	}
	if strings.Contains(stdout, "s3cr3t-value") {
		t.Error("doctor shows the secret")
	}
}

func TestDoctorReportsFailures(t *testing.T) {
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{}) // does not know the app: 40013
	t.Cleanup(sim.Close)
	path, cfg := doctorConfig(t, rs.Addr, sim.URL)
	b := runBroker(t, cfg)
	waitFor(t, "a refresh error in the status", 10*time.Second, func() bool {
		st := b.Status(t.Context())
		return len(st.Apps) == 1 && st.Apps[0].AccessToken.LastError != nil
	})
	code, stdout, _ := runCmd(t, "doctor", "--config", path)
	if code != exitFailure || !strings.Contains(stdout, "FAIL app      prod/wx04a7af67c8f47620 access_token: last refresh failed") ||
		!strings.Contains(stdout, "errcode 40013") || !strings.Contains(stdout, "fix: ") {
		t.Errorf("doctor = %d:\n%s\nwant exit 1 and the app's 40013 with its fix", code, stdout)
	}

	// WeChat unreachable: a closed port.
	dead := "http://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	path, _ = doctorConfig(t, rs.Addr, dead)
	code, stdout, _ = runCmd(t, "doctor", "--config", path)
	if code != exitFailure || !strings.Contains(stdout, "FAIL wechat   cannot reach "+dead) {
		t.Errorf("doctor with WeChat unreachable = %d:\n%s", code, stdout)
	}
}

// TestDoctorHidesBaseURLQuery: a query string in wechat.base_url (an API key
// for a proxy, say) is refused by validation, as serve refuses it, and doctor
// shows neither its values nor a userinfo password (before, the URL loaded
// and doctor printed "?apikey=..." in clear).
func TestDoctorHidesBaseURLQuery(t *testing.T) {
	const apikey, pw = "q-secret-5d1e", "pw-secret-93ab"
	deadRedis := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	yaml := fmt.Sprintf(`redis: {addrs: [%q]}
wechat:
  base_url: "https://proxy.example/wx?apikey=%s"
  fallback_urls: ["https://u:%s@proxy2.example/?token=%s#%s"]
  timeout: 1s
namespaces:
  prod:
    apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-value, kind: miniprogram}]
`, deadRedis, apikey, pw, apikey, apikey)
	path := filepath.Join(t.TempDir(), "wxbroker.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "doctor", "--config", path)
	for _, secret := range []string{apikey, pw} {
		if strings.Contains(stdout+stderr, secret) {
			t.Errorf("doctor shows %q:\n%s%s", secret, stdout, stderr)
		}
	}
	for _, want := range []string{
		"wechat.base_url = \"https://proxy.example/wx?apikey=xxxxx\": must not carry a query string or fragment",
		"wechat.fallback_urls[0] = \"https://u:xxxxx@proxy2.example/?token=xxxxx#xxxxx\": must not carry a query string or fragment",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
	if code != exitFailure {
		t.Errorf("doctor = exit %d; want %d", code, exitFailure)
	}
}

// TestDoctorRedisPersistence: with components configured, doctor warns when
// Redis keeps no persistence (a restart loses every authorizer refresh
// token) and says ok when appendonly is on.
func TestDoctorRedisPersistence(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		sev  severity
		want string
	}{
		{"none", nil, sevWarn, "keeps no persistence"},
		{"appendonly", []string{"--appendonly", "yes"}, sevOK, "keeps its data across a restart (appendonly yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := redistest.Start(t, tc.args...)
			f := persistenceFinding(t.Context(), rs.Client(t))
			if f.Severity != tc.sev || !strings.Contains(f.Message, tc.want) {
				t.Errorf("finding = %v %q; want %v containing %q", f.Severity, f.Message, tc.sev, tc.want)
			}
		})
	}
}
