package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// compatReplica is one broker with its API on a loopback port.
type compatReplica struct {
	b   *broker.Broker
	m   *metrics.Metrics
	url string
}

// startReplicas runs n brokers sharing one redis-server and one simulated
// WeChat, each with its own API server.
func startReplicas(t *testing.T, sim *wechattest.Server, n int) []*compatReplica {
	t.Helper()
	rs := redistest.Start(t)
	cfg := testConfig()
	cfg.Redis.Addrs = []string{rs.Addr}
	cfg.Redis.KeyPrefix = fmt.Sprintf("compat%d", time.Now().UnixNano()%1e9)
	cfg.WeChat.BaseURL = sim.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.WeChat.Timeout = 2 * time.Second
	cfg.Leader.LockTTL = 8 * time.Second
	cfg.Leader.RenewInterval = time.Second
	cfg.Refresh.ForceMinInterval = time.Millisecond
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var out []*compatReplica
	for i := range n {
		m := metrics.New(prometheus.NewRegistry())
		log := zaptest.NewLogger(t).Named(fmt.Sprintf("r%d", i))
		b := brokertest.Run(t, broker.Options{Config: cfg, Redis: rs.Client(t), WeChat: mustWeChat(t, sim.URL),
			Logger: log, Metrics: m, InstanceID: fmt.Sprintf("r%d", i)})
		a, err := New(Options{Tokens: b, Config: cfg, Logger: log, Metrics: m, AuditWriter: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		srv := httptest.NewServer(a.Handler())
		t.Cleanup(srv.Close)
		brokertest.WaitToken(t, b, "prod", appA, 20*time.Second)
		out = append(out, &compatReplica{b: b, m: m, url: srv.URL})
	}
	return out
}

// compatAnswer is WeChat's token answer or error.
type compatAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Errcode     int    `json:"errcode"`
	Errmsg      string `json:"errmsg"`
}

func decodeWX(t *testing.T, resp *http.Response, err error) compatAnswer {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d; WeChat's shape answers 200", resp.StatusCode)
	}
	var a compatAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func cgiToken(t *testing.T, base, key, appid string) compatAnswer {
	t.Helper()
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {key}}
	resp, err := http.Get(base + "/cgi-bin/token?" + q.Encode())
	return decodeWX(t, resp, err)
}

func stableToken(t *testing.T, base, body string) compatAnswer {
	t.Helper()
	resp, err := http.Post(base+"/cgi-bin/stable_token", "application/json", strings.NewReader(body))
	return decodeWX(t, resp, err)
}

func stableBody(key, appid string, force bool) string {
	return fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q,"force_refresh":%t}`, appid, key, force)
}

// leaderFirst orders the replicas leader first.
func leaderFirst(t *testing.T, rs []*compatReplica) []*compatReplica {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, r := range rs {
			if r.b.IsLeader() {
				out := []*compatReplica{r}
				for j, o := range rs {
					if j != i {
						out = append(out, o)
					}
				}
				return out
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

func falseReports(rs []*compatReplica, source string) float64 {
	var n float64
	for _, r := range rs {
		n += testutil.ToFloat64(r.m.FalseReports.WithLabelValues("prod", appA, source))
	}
	return n
}

// An SDK pointed at the broker: after a token is killed outside, the SDK's
// repeated fetch (its 40001 retry) on a follower gets a new token, which the
// other replica serves too; stable_token answers in WeChat's shape and its
// force_refresh is a checked report; a burst of ordinary fetches costs one
// check and no refresh.
func TestCompatFetchReports(t *testing.T) {
	sim := wechattest.NewServer(wechattest.Options{ForceMinInterval: time.Millisecond})
	t.Cleanup(sim.Close)
	for appid, secret := range map[string]string{appA: "sa", appB: "sb", appC: "sc"} {
		sim.AddApp(appid, secret)
	}
	rs := leaderFirst(t, startReplicas(t, sim, 2))
	lead, follower := rs[0], rs[1]
	checks := func() int { return sim.Calls(wechat.APIDomainIP, appA) }
	stables := func() int { return sim.Calls(wechat.APIStableToken, appA) }
	base := stables()
	outside := mustWeChat(t, sim.URL)
	// appA's jsapi ticket follows its token: a getticket call racing an
	// outside kill would meet 40001 and refresh the token by itself (a
	// proven report). Let each ticket fetch finish before killing a token.
	ticket := func() string {
		tk, _ := lead.b.Ticket("prod", appA, "jsapi")
		return tk.Ticket
	}
	waitTicket := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if tk := ticket(); tk != "" && tk != not {
				return tk
			}
			if time.Now().After(deadline) {
				t.Fatal("timed out waiting for the ticket of the current token")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tk0 := waitTicket("")

	// Another process force-refreshes the app's stable token: the one the
	// broker serves is dead. An SDK fetches it, meets 40001 and asks again
	// at once: that repeat is the failure report.
	if _, err := outside.StableToken(t.Context(), appA, "sa", true); err != nil {
		t.Fatal(err)
	}
	dead := cgiToken(t, follower.url, keyMulti, appA)
	if dead.AccessToken == "" || dead.ExpiresIn <= 0 || dead.Errcode != 0 {
		t.Fatalf("/cgi-bin/token = %+v; want WeChat's token shape", dead)
	}
	if sim.TokenValid(appA, dead.AccessToken) {
		t.Fatal("want the broker to still serve the token killed outside")
	}
	fresh := cgiToken(t, follower.url, keyMulti, appA)
	if fresh.AccessToken == dead.AccessToken || !sim.TokenValid(appA, fresh.AccessToken) {
		t.Fatalf("the repeated fetch after 40001 got the dead token again (or an invalid one)")
	}
	// stable_token calls: the outside one and the broker's one normal-mode
	// call (which picks up the outsider's token; no forced call needed).
	if checks() != 1 || stables()-base != 2 {
		t.Errorf("recovery: %d checks, %d stable_token calls; want 1 and 2", checks(), stables()-base)
	}
	// The leader's replica serves the new token too: at once, or as soon
	// as it has applied its own write (the follower may hear of the record
	// through pub/sub a moment before the leader's goroutine that wrote it
	// puts it in the leader's cache).
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := cgiToken(t, lead.url, keyMulti, appA)
		if got.AccessToken == fresh.AccessToken {
			break
		}
		if time.Now().After(deadline) {
			t.Error("the other replica serves another token")
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	waitTicket(tk0)

	// Killed outside again: stable_token's force_refresh reports the token
	// this caller was last given, and it is replaced.
	if _, err := outside.StableToken(t.Context(), appA, "sa", true); err != nil {
		t.Fatal(err)
	}
	st := stableToken(t, follower.url, stableBody(keyMulti, appA, true))
	if st.AccessToken == fresh.AccessToken || st.ExpiresIn <= 0 || !sim.TokenValid(appA, st.AccessToken) {
		t.Fatalf("force_refresh of a dead token answered %+v; want a new valid token", st)
	}
	if checks() != 2 || stables()-base != 4 {
		t.Errorf("force_refresh: %d checks, %d stable_token calls; want 2 and 4", checks(), stables()-base)
	}
	if n := falseReports(rs, metrics.SourceCompat); n != 0 {
		t.Errorf("false reports {compat} = %v; want 0", n)
	}

	// A burst of ordinary fetches by one caller: every repeat is a report,
	// WeChat accepts the token, and one verdict answers the reports made up
	// to a second after it: one check per second of burst at most.
	began := time.Now()
	for range 6 {
		if got := cgiToken(t, follower.url, keyOrder, appA); got.AccessToken != st.AccessToken {
			t.Fatal("a burst of fetches changed the token")
		}
	}
	burst := time.Since(began)
	if n := checks() - 2; n < 1 || n > 1+int(burst/time.Second) || stables()-base != 4 {
		t.Fatalf("burst of %s: %d checks, %d stable_token calls; want 1 (+1 a second) and 4", burst, n, stables()-base)
	}
	if n := falseReports(rs, metrics.SourceCompat); n != 5 {
		t.Errorf("false reports {compat} = %v; want 5", n)
	}
	burstChecks := checks()
	// stable_token without force: WeChat's shape, from the cache.
	if got := stableToken(t, lead.url, stableBody(keyOrder, appA, false)); got.AccessToken != st.AccessToken || got.Errcode != 0 {
		t.Fatalf("stable_token = %+v; want the current token", got)
	}
	// force_refresh from a caller never served here reports the current
	// token: WeChat's fresh verdict on it answers, unchanged.
	if got := stableToken(t, follower.url, stableBody(keySRE, appA, true)); got.AccessToken != st.AccessToken {
		t.Error("force_refresh of a valid token changed it")
	}
	if n := falseReports(rs, metrics.SourceCompat); n != 6 || checks() > burstChecks+1 || stables()-base != 4 {
		t.Errorf("false reports {compat} = %v, checks %d, stable_token calls %d; want 6, at most %d and 4", n, checks(), stables()-base, burstChecks+1)
	}
}

func TestStableTokenRefusals(t *testing.T) {
	h := newHarness(t)
	for _, tc := range []struct {
		name, method, body string
		want               int
	}{
		{"GET", http.MethodGet, "", 43002},
		{"not JSON", http.MethodPost, "grant_type=client_credential", 47001},
		{"bad grant", http.MethodPost, `{"grant_type":"x","appid":"` + appA + `","secret":"` + keyOrder + `"}`, 40002},
		{"no appid", http.MethodPost, `{"grant_type":"client_credential","secret":"` + keyOrder + `"}`, 41002},
		{"no key", http.MethodPost, `{"grant_type":"client_credential","appid":"` + appA + `"}`, 41004},
		{"unknown key", http.MethodPost, stableBody("nope", appA, false), 40125},
		{"not allowed", http.MethodPost, stableBody(keyOrder, appB, false), 48001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "/cgi-bin/stable_token", strings.NewReader(tc.body))
			rec := httptest.NewRecorder()
			h.api.Handler().ServeHTTP(rec, req)
			var a compatAnswer
			if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &a) != nil || a.Errcode != tc.want || a.AccessToken != "" {
				t.Fatalf("%s /cgi-bin/stable_token %s = %d %s; want 200 errcode %d", tc.method, tc.body, rec.Code, rec.Body, tc.want)
			}
			if strings.Contains(rec.Body.String(), `"error"`) {
				t.Errorf("answer %s uses the broker's error shape", rec.Body)
			}
		})
	}
	if len(h.fake.invalidated) != 0 {
		t.Errorf("a refused request reported a token: %v", h.fake.invalidated)
	}
}

func TestHandoutsAreBounded(t *testing.T) {
	h := newHandouts(3)
	for i := range 5 {
		h.put(handout{key: callerApp{client: "c", ip: fmt.Sprint(i), ns: "prod", appid: appA}, token: "t"})
	}
	if n, m := h.lru.Len(), len(h.m); n != 3 || m != 3 {
		t.Fatalf("remembered %d callers (%d in the index); want 3", n, m)
	}
	if _, ok := h.last(callerApp{client: "c", ip: "0", ns: "prod", appid: appA}); ok {
		t.Error("the least recently served caller was kept")
	}
	if _, ok := h.last(callerApp{client: "c", ip: "4", ns: "prod", appid: appA}); !ok {
		t.Error("the latest caller was forgotten")
	}
}
