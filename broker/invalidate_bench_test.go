package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/broker/api"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// BenchmarkInvalidate1000 reports one failed token 1000 times at once per
// iteration, on the invalidate route of three replicas (brokers on one
// redis-server, one simulator) with one client key at the default client
// settings (clients[].invalidate, invalidate_per_minute), and requires that
// all 1000 reports get the new token and that WeChat sees exactly one token
// call. Each iteration kills the current token outside the broker first, so
// that the broker's check with WeChat finds it dead, and starts the replicas'
// APIs afresh: a report burst of one token costs the key one report per
// replica, and a run of more than 60 iterations a minute would otherwise be
// what the limit is there to refuse.
func BenchmarkInvalidate1000(b *testing.B) {
	const (
		ns, appid, secret = "prod", "wx00000000000000a1", "bench-secret-0123456789"
		key               = "bench-client-key-0123456789"
		reports           = 1000
	)
	rs := redistest.Start(b)
	// One forced refresh per iteration: lift the daily caps (the broker's
	// and the simulator's) that would stop a long run. A 1 ms overlap: a
	// token superseded outside dies at once.
	sim := wechattest.NewServer(wechattest.Options{DailyQuota: 1 << 30, Overlap: time.Millisecond})
	b.Cleanup(sim.Close)
	sim.AddApp(appid, secret)
	cfg := config.Default()
	cfg.InstanceID = "bench" // each broker gets its own below
	cfg.Namespaces = map[string]*config.Namespace{ns: {Apps: []*config.App{{AppID: appid, Secret: secret,
		Kind: config.KindOfficialAccount, TokenMode: config.ModeClassic}}}}
	cfg.Clients = []config.Client{{Name: "bench", KeySHA256: config.HashKey(key), Allow: []string{ns + "/" + appid}}}
	cfg.Redis.Addrs = []string{rs.Addr}
	cfg.Redis.KeyPrefix = fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9)
	cfg.WeChat.BaseURL = sim.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.Refresh.ForceMinInterval = time.Millisecond
	cfg.Refresh.ForceDailyCap = 1 << 30
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	var brokers []*broker.Broker
	for i := range 3 {
		wx, err := wechat.New(wechat.Options{BaseURL: sim.URL, Timeout: cfg.WeChat.Timeout})
		if err != nil {
			b.Fatal(err)
		}
		brokers = append(brokers, brokertest.Run(b, broker.Options{Config: cfg, Redis: rs.Client(b), WeChat: wx,
			Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()), InstanceID: fmt.Sprintf("bench-%d", i)}))
	}
	for _, br := range brokers {
		brokertest.WaitToken(b, br, ns, appid, 30*time.Second)
	}
	outside, err := wechat.New(wechat.Options{BaseURL: sim.URL})
	if err != nil {
		b.Fatal(err)
	}
	path := "/v1/namespaces/" + ns + "/apps/" + appid + "/access_token/invalidate"
	checks := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		cur := brokertest.WaitToken(b, brokers[0], ns, appid, 10*time.Second)
		waitUntil(b, "the replicas to agree", func() bool {
			for _, br := range brokers {
				if tok, err := br.AccessToken(ns, appid); err != nil || tok.AccessToken != cur.AccessToken {
					return false
				}
			}
			return true
		})
		if _, err := outside.Token(context.Background(), appid, secret); err != nil {
			b.Fatalf("outside fetch: %v", err)
		}
		waitUntil(b, "the outside fetch to kill the token", func() bool { return !sim.TokenValid(appid, cur.AccessToken) })
		apis := make([]*api.API, len(brokers))
		for i, br := range brokers {
			a, err := api.New(api.Options{Tokens: br, Config: cfg, Logger: zap.NewNop(), AuditLogger: zap.NewNop(), Metrics: m})
			if err != nil {
				b.Fatal(err)
			}
			apis[i] = a
		}
		tokens, domainIP := sim.Calls(wechat.APIToken, appid), sim.Calls(wechat.APIDomainIP, appid)
		body := `{"access_token":"` + cur.AccessToken + `"}`
		answers := make([]string, reports)
		b.StartTimer()

		var wg sync.WaitGroup
		for i := range reports {
			wg.Go(func() {
				req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				rec := httptest.NewRecorder()
				apis[i%len(apis)].Handler().ServeHTTP(rec, req)
				var a struct {
					AccessToken string `json:"access_token"`
				}
				if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &a) != nil || a.AccessToken == cur.AccessToken {
					answers[i] = fmt.Sprintf("%d %s", rec.Code, rec.Body.Bytes())
				}
			})
		}
		wg.Wait()

		b.StopTimer()
		failed := 0
		for i, a := range answers {
			if a != "" {
				if failed++; failed <= 3 {
					b.Errorf("report #%d on replica %d: %s; want the new token", i, i%len(apis), a)
				}
			}
		}
		if failed > 0 {
			b.Fatalf("%d of %d concurrent reports of one token with one client key did not get the new token", failed, reports)
		}
		if got := sim.Calls(wechat.APIToken, appid) - tokens; got != 1 {
			b.Fatalf("%d concurrent reports caused %d WeChat token calls; want exactly 1", reports, got)
		}
		checks += sim.Calls(wechat.APIDomainIP, appid) - domainIP
		for _, a := range apis {
			_ = a.Close()
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(1, "wechat_token_calls/op") // checked in every iteration
	b.ReportMetric(float64(checks)/float64(b.N), "checks/op")
	b.Logf("target: %d concurrent reports of one token over 3 replicas, one client key at the default limits → all get the new token, exactly 1 WeChat token call: MET in %d iterations", reports, b.N)
}

// waitUntil polls cond until it holds, failing b after 10 s.
func waitUntil(b *testing.B, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
