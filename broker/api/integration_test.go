package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestWithRealBroker runs the API over a real broker (real redis-server,
// simulated WeChat): a read, an invalidation and the refreshes they cause,
// then checks /metrics for every docs/METRICS.md metric with the expected values.
func TestWithRealBroker(t *testing.T) {
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	for appid, secret := range map[string]string{appA: "sa", appB: "sb", appC: "sc"} {
		sim.AddApp(appid, secret)
	}
	// The first stable_token call fails with -1: the broker retries, and
	// wxbroker_wechat_errors_total must show it.
	sim.Fail(wechat.APIStableToken, 1, wechattest.Fault{Errcode: -1})

	cfg := testConfig()
	cfg.Redis.Addrs = []string{rs.Addr}
	cfg.Redis.KeyPrefix = fmt.Sprintf("apitest%d", time.Now().UnixNano()%1e9)
	cfg.WeChat.BaseURL = sim.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.WeChat.Timeout = time.Second
	cfg.Leader.LockTTL = 3 * time.Second
	cfg.Leader.RenewInterval = time.Second
	cfg.Refresh.ForceMinInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	log := zaptest.NewLogger(t)
	b := brokertest.Run(t, broker.Options{Config: cfg, Redis: rs.Client(t), WeChat: mustWeChat(t, sim.URL), Logger: log, Metrics: m})
	a, err := New(Options{Tokens: b, Config: cfg, Logger: log, Metrics: m, Gatherer: reg, AuditWriter: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)

	for _, k := range []appKey{{"prod", appA}, {"prod", appB}, {"staging", appC}} {
		brokertest.WaitToken(t, b, k.ns, k.appid, 20*time.Second)
	}

	// A read.
	first := getToken(t, srv.URL+tokenPath("prod", appA), keyOrder)
	if !sim.TokenValid(appA, first.AccessToken) {
		t.Fatal("the broker served a token WeChat does not accept")
	}
	// Another process force-refreshes the stable token: the broker's one is
	// dead, and the report of it gets the conditional refresh.
	outside := mustWeChat(t, sim.URL)
	if _, err := outside.StableToken(t.Context(), appA, "sa", true); err != nil {
		t.Fatal(err)
	}
	second := postInvalidate(t, srv.URL+tokenPath("prod", appA)+"/invalidate", keyOrder, first.AccessToken)
	if second.AccessToken == first.AccessToken || second.Generation <= first.Generation {
		t.Fatalf("invalidate returned %+v after %+v; want a newer token", second, first)
	}
	if !sim.TokenValid(appA, second.AccessToken) {
		t.Fatal("the refreshed token is not accepted by WeChat")
	}
	// A report of a token WeChat still accepts is checked and answered
	// unchanged: no refresh, one false report.
	same := postInvalidate(t, srv.URL+tokenPath("prod", appA)+"/invalidate", keyOrder, second.AccessToken)
	if same.AccessToken != second.AccessToken {
		t.Fatalf("invalidate of a valid token returned generation %d after %d; want it unchanged", same.Generation, second.Generation)
	}
	// The WeChat-compatible getticket route names the app by its token.
	resp, err := http.Get(srv.URL + "/cgi-bin/ticket/getticket?type=jsapi&access_token=" + second.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), `{"errcode":0,"errmsg":"ok","ticket":"`) {
		t.Errorf("getticket with the broker's token = %s", body)
	}

	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	// wxbroker_login_total belongs to the login endpoints, which this API
	// does not serve; broker/login's tests cover it.
	for _, name := range []string{
		"wxbroker_leader", "wxbroker_leader_epoch", "wxbroker_leader_transitions_total",
		"wxbroker_fenced_writes_rejected_total", "wxbroker_token_refresh_total",
		"wxbroker_token_refresh_duration_seconds", "wxbroker_token_expiry_timestamp_seconds",
		"wxbroker_token_last_refresh_success_timestamp_seconds", "wxbroker_invalid_credential_total",
		"wxbroker_external_invalidation_total", "wxbroker_wechat_errors_total", "wxbroker_wechat_quota_used",
		"wxbroker_token_requests_total", "wxbroker_http_request_duration_seconds", "wxbroker_false_reports_total",
	} {
		if !strings.Contains(string(body), "\n"+name+" ") && !strings.Contains(string(body), "\n"+name+"{") &&
			!strings.Contains(string(body), "\n"+name+"_count") {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	now := float64(time.Now().Unix())
	checks := []struct {
		name     string
		got      float64
		min, max float64
	}{
		{"leader", testutil.ToFloat64(m.Leader), 1, 1},
		{"leader_epoch", testutil.ToFloat64(m.LeaderEpoch), 1, 1e9},
		{"leader_transitions_total", testutil.ToFloat64(m.LeaderTransitions), 1, 1},
		{"fenced_writes_rejected_total", testutil.ToFloat64(m.FencedWritesRejected), 0, 0},
		// The scheduled refresh counts; the invalidation-triggered fetch does
		// not (yet) go through token_refresh_total in broker.
		{"token_refresh_total{success, appA}", testutil.ToFloat64(m.TokenRefresh.WithLabelValues("prod", appA, broker.KindAccessToken, metrics.ResultSuccess)), 1, 3},
		{"invalid_credential_total{client, appA}", testutil.ToFloat64(m.InvalidCredential.WithLabelValues("prod", appA, metrics.SourceClient)), 1, 1},
		{"external_invalidation_total{appA}", testutil.ToFloat64(m.ExternalInvalidation.WithLabelValues("prod", appA)), 1, 1},
		{"false_reports_total{client, appA}", testutil.ToFloat64(m.FalseReports.WithLabelValues("prod", appA, metrics.SourceClient)), 1, 1},
		{"wechat_errors_total{stable_token,-1}", sumWeChatErrors(m, cfg.Apps(), "-1"), 1, 1},
		{"wechat_quota_used{appA, stable_token}", testutil.ToFloat64(m.WeChatQuotaUsed.WithLabelValues("prod", appA, wechat.APIStableToken)), 2, 4},
		{"token_expiry_timestamp_seconds{appA}", testutil.ToFloat64(m.TokenExpiry.WithLabelValues("prod", appA, broker.KindAccessToken)), now + 7000, now + 7201},
		{"token_last_refresh_success_timestamp_seconds{appA}", testutil.ToFloat64(m.TokenLastRefreshSuccess.WithLabelValues("prod", appA, broker.KindAccessToken)), now - 30, now + 1},
		{"token_requests_total{prod, ok}", testutil.ToFloat64(m.TokenRequests.WithLabelValues("prod", appA, metrics.RequestOK)), 4, 4},
	}
	for _, c := range checks {
		if c.got < c.min || c.got > c.max {
			t.Errorf("%s = %v; want in [%v, %v]", c.name, c.got, c.min, c.max)
		}
	}
	for _, want := range []string{
		`wxbroker_http_request_duration_seconds_count{code="200",listener="internal",route="/v1/namespaces/:ns/apps/:appid/access_token"} 1`,
		`wxbroker_http_request_duration_seconds_count{code="200",listener="internal",route="/v1/namespaces/:ns/apps/:appid/access_token/invalidate"} 2`,
		`wxbroker_token_refresh_duration_seconds_count{kind="access_token",wx_namespace="prod"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func sumWeChatErrors(m *metrics.Metrics, apps []config.AppRef, code string) float64 {
	var sum float64
	for _, ref := range apps {
		sum += testutil.ToFloat64(m.WeChatErrors.WithLabelValues(ref.Namespace, ref.App.AppID, wechat.APIStableToken, code))
	}
	return sum
}

func mustWeChat(t *testing.T, base string) *wechat.Client {
	t.Helper()
	c, err := wechat.New(wechat.Options{BaseURL: base, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Generation  int64  `json:"generation"`
}

func getToken(t *testing.T, u, key string) tokenAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	return doToken(t, req)
}

func postInvalidate(t *testing.T, u, key, failed string) tokenAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"access_token":"`+failed+`"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	return doToken(t, req)
}

func doToken(t *testing.T, req *http.Request) tokenAnswer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a tokenAnswer
	if resp.StatusCode != 200 || json.Unmarshal(body, &a) != nil || a.AccessToken == "" {
		t.Fatalf("%s %s = %d %s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	if a.ExpiresIn <= 0 || a.ExpiresAt == "" {
		t.Errorf("token answer lacks its lifetime: %s", body)
	}
	return a
}
