package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/broker/api"
	"github.com/wxbroker/wxbroker/client"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// A service reads tokens through a Client and calls WeChat through its
// Transport. Here the broker runs in-process (embedded Redis, simulated
// WeChat, as `wxbroker dev` does); another process then fetches a token
// with the same AppID, which kills the one the service holds, and the
// Transport's retry recovers without the service noticing.
func Example() {
	env := startBroker()
	defer env.stop()

	c, err := client.New(client.Options{BaseURL: env.brokerURL, Key: env.key, Namespace: "prod"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	tok, err := c.AccessToken(ctx, env.appid)
	fmt.Println("token read:", err == nil && tok != "")

	// Someone outside the broker fetches a token for the same AppID.
	env.killToken(tok)

	// The service's call meets 40001 with its cached token; the Transport
	// reports it, gets the broker's new token and retries once.
	hc := &http.Client{Transport: c.Transport(env.appid, nil)}
	resp, err := hc.Get(env.wechatURL + "/cgi-bin/get_api_domain_ip")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Errcode int      `json:"errcode"`
		IPList  []string `json:"ip_list"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
		panic(err)
	}
	fmt.Println("errcode:", answer.Errcode, "ips:", len(answer.IPList) > 0)
	fresh, _ := c.AccessToken(ctx, env.appid)
	fmt.Println("token replaced:", fresh != tok)
	// Output:
	// token read: true
	// errcode: 0 ips: true
	// token replaced: true
}

// exampleEnv is an in-process broker with its internal API, on embedded
// Redis and the WeChat simulator.
type exampleEnv struct {
	brokerURL, wechatURL, key, appid, secret string
	sim                                      *wechattest.Server
	stop                                     func()
}

func startBroker() *exampleEnv {
	const appid, secret, key = "wx00000000000e0001", "example-secret", "example-client-key"
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		panic(err)
	}
	// A classic token whose predecessor dies at once: the outside fetch
	// below kills the service's token immediately.
	sim := wechattest.NewServer(wechattest.Options{Overlap: time.Millisecond})
	sim.AddApp(appid, secret)

	cfg := config.Default()
	cfg.InstanceID = "example"
	cfg.Redis.Addrs = []string{mr.Addr()}
	cfg.WeChat = config.WeChat{BaseURL: sim.URL, Timeout: 2 * time.Second}
	cfg.Namespaces = map[string]*config.Namespace{"prod": {Apps: []*config.App{{
		AppID: appid, Secret: config.Secret(secret), Kind: config.KindOfficialAccount, TokenMode: config.ModeClassic,
	}}}}
	cfg.Clients = []config.Client{{Name: "example-service", KeySHA256: config.HashKey(key), Allow: []string{"prod/*"}}}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	wc, err := wechat.New(wechat.Options{BaseURL: sim.URL})
	if err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	m := metrics.New(prometheus.NewRegistry())
	b, err := broker.New(broker.Options{Config: cfg, Redis: rdb, WeChat: wc, Logger: zap.NewNop(), Metrics: m})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	a, err := api.New(api.Options{Tokens: b, Config: cfg, Logger: zap.NewNop(), Metrics: m, AuditWriter: io.Discard})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(a.Handler())
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := b.AccessToken("prod", appid); err == nil {
			break
		}
		if time.Now().After(deadline) {
			panic("no token from the broker")
		}
	}
	return &exampleEnv{
		brokerURL: srv.URL, wechatURL: sim.URL, key: key, appid: appid, secret: secret, sim: sim,
		stop: func() {
			srv.Close()
			_ = a.Close()
			cancel()
			<-done
			_ = rdb.Close()
			sim.Close()
			mr.Close()
		},
	}
}

// killToken fetches a token for the app outside the broker and waits until
// WeChat no longer accepts tok.
func (e *exampleEnv) killToken(tok string) {
	wc, err := wechat.New(wechat.Options{BaseURL: e.wechatURL})
	if err != nil {
		panic(err)
	}
	if _, err := wc.Token(context.Background(), e.appid, e.secret); err != nil {
		panic(err)
	}
	for e.sim.TokenValid(e.appid, tok) { // the simulator's 1ms overlap
		time.Sleep(time.Millisecond)
	}
}
