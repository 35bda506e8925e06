package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// IssuedTokenApp makes the fake a TokenSource: its current tokens are the
// only ones it handed out.
func (f *fakeTokens) IssuedTokenApp(_ context.Context, tok string) (string, string, bool, error) {
	ns, appid, ok := f.AppByToken(tok)
	return ns, appid, ok, nil
}

// AppSecrets of the gateway tests: long and unique, so that a scan for them
// in logs and requests means something.
var gwSecrets = map[string]string{
	appA: "SECRET-A-9f8e7d6c5b4a39281706",
	appB: "SECRET-B-0a1b2c3d4e5f60718293",
	appC: "SECRET-C-1122334455667788aabb",
}

// gwEnv is a real deployment in miniature: one redis-server, the WeChat
// simulator, and replicas (broker + API on a loopback server each) whose
// gateways send to WeChat through a recorder.
type gwEnv struct {
	t        *testing.T
	sim      *wechattest.Server
	rec      *recorder
	cfg      *config.Config
	replicas []*replica
	logs     *logtest.Buffer // every zap line of every replica, debug level
	audit    *logtest.Buffer // every audit line
	client   *http.Client    // the service's client; records what it sends
	sent     *recorder
}

type replica struct {
	b   *broker.Broker
	api *API
	m   *metrics.Metrics
	url string
}

// recorder keeps every request it sees (method, URL, headers, body).
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path, query string
	header              http.Header
	body                []byte
}

func (r *recorder) add(req *http.Request, body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.URL.RawQuery, req.Header.Clone(), body})
}

func (r *recorder) all() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

// clientRecorder records what the service sends before sending it.
type clientRecorder struct {
	rec *recorder
	rt  http.RoundTripper
}

func (c *clientRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	c.rec.add(req, body)
	return c.rt.RoundTrip(req)
}

func newGatewayEnv(t *testing.T, replicas int, now func() time.Time) *gwEnv {
	t.Helper()
	return newGatewayEnvWith(t, replicas, now, nil)
}

// newGatewayEnvWith is newGatewayEnv with mod applied to the configuration
// before it is validated.
func newGatewayEnvWith(t *testing.T, replicas int, now func() time.Time, mod func(*config.Config)) *gwEnv {
	t.Helper()
	rs := redistest.Start(t)
	// A 1 ms overlap: a token superseded by an outside fetch dies at once.
	sim := wechattest.NewServer(wechattest.Options{Overlap: time.Millisecond})
	t.Cleanup(sim.Close)
	for appid, secret := range gwSecrets {
		sim.AddApp(appid, secret)
	}
	rec := &recorder{}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.add(r, body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	cfg := testConfig()
	for _, ref := range cfg.Apps() {
		ref.App.Secret = config.Secret(gwSecrets[ref.App.AppID])
		ref.App.TokenMode = config.ModeClassic // one fetch per refresh: countable
		ref.App.Tickets = nil
	}
	cfg.Redis.Addrs = []string{rs.Addr}
	cfg.Redis.KeyPrefix = fmt.Sprintf("gwtest%d", time.Now().UnixNano()%1e9)
	cfg.WeChat.BaseURL = front.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.WeChat.Timeout = 2 * time.Second
	cfg.Leader.LockTTL = 6 * time.Second
	cfg.Leader.RenewInterval = time.Second
	cfg.Refresh.ForceMinInterval = time.Millisecond
	cfg.Refresh.ForceDailyCap = 1000
	cfg.Gateway.Timeout = 20 * time.Second
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := &gwEnv{t: t, sim: sim, rec: rec, cfg: cfg, logs: &logtest.Buffer{}, audit: &logtest.Buffer{}, sent: &recorder{}}
	e.client = &http.Client{Transport: &clientRecorder{rec: e.sent, rt: &http.Transport{MaxIdleConnsPerHost: 256}}}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), e.logs, zapcore.DebugLevel))
	for i := range replicas {
		reg := prometheus.NewRegistry()
		m := metrics.New(reg)
		l := log.With(zap.Int("replica", i))
		// The broker's own WeChat client goes to the simulator directly: only
		// the gateway's requests are recorded.
		wx, err := wechat.New(wechat.Options{BaseURL: sim.URL, Timeout: cfg.WeChat.Timeout})
		if err != nil {
			t.Fatal(err)
		}
		b := brokertest.Run(t, broker.Options{Config: cfg, Redis: rs.Client(t), WeChat: wx,
			Logger: l, Metrics: m, Now: now, InstanceID: fmt.Sprintf("replica-%d", i)})
		a, err := New(Options{Tokens: b, Config: cfg, Logger: l, Metrics: m, Gatherer: reg, AuditWriter: e.audit, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Close() })
		srv := httptest.NewServer(a.Handler())
		t.Cleanup(srv.Close)
		e.replicas = append(e.replicas, &replica{b: b, api: a, m: m, url: srv.URL})
	}
	for _, r := range e.replicas {
		for _, ref := range cfg.Apps() {
			brokertest.WaitToken(t, r.b, ref.Namespace, ref.App.AppID, 30*time.Second)
		}
	}
	return e
}

// do sends a request through replica i's gateway and returns status,
// headers and body.
func (e *gwEnv) do(i int, method, pathQuery string, header http.Header, body io.Reader) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.replicas[i%len(e.replicas)].url+pathQuery, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// sdkToken is what a WeChat SDK pointed at the broker gets from
// /cgi-bin/token with its client key as the secret.
func (e *gwEnv) sdkToken(i int, appid, key string) string {
	e.t.Helper()
	_, _, b := e.do(i, http.MethodGet, "/cgi-bin/token?grant_type=client_credential&appid="+appid+"&secret="+key, nil, nil)
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(b, &v) != nil || v.AccessToken == "" {
		e.t.Fatalf("/cgi-bin/token = %s", b)
	}
	return v.AccessToken
}

func bearerFor(key, ns, appid string) http.Header {
	return http.Header{"Authorization": {"Bearer " + key}, appHeader: {ns + "/" + appid}}
}

// wxAnswer decodes a WeChat-shaped answer and checks the shape: HTTP 200,
// an errcode, never the broker's {"error": ...}.
func wxAnswer(t *testing.T, what string, status int, body []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: answer is not JSON: %q", what, body)
	}
	if status != http.StatusOK {
		t.Errorf("%s: HTTP %d; WeChat answers errors with 200", what, status)
	}
	if _, ok := v["error"]; ok {
		t.Errorf("%s: answer in the broker's {\"error\"} shape: %s", what, body)
	}
	return v
}

func errcode(v map[string]any) int {
	n, _ := v["errcode"].(float64)
	return int(n)
}

func (e *gwEnv) tokenCalls(appid string) int { return e.sim.Calls(wechat.APIToken, appid) }

func (e *gwEnv) external(appid string) float64 {
	var n float64
	for _, r := range e.replicas {
		n += testutil.ToFloat64(r.m.ExternalInvalidation.WithLabelValues("prod", appid))
	}
	return n
}

func (e *gwEnv) sumRetries(appid, result string) float64 {
	var n float64
	for _, r := range e.replicas {
		n += testutil.ToFloat64(r.m.Gateway.Retries.WithLabelValues("prod", appid, result))
	}
	return n
}

// TestGateway runs the gateway over two replicas, a real redis-server and
// the simulator: ordinary API calls of each kind, the retry once on an
// injected 40001, recovery of a token killed outside the broker for 200
// concurrent SDK calls holding it, refusals in WeChat's shape, the AppSecret
// fill-in, and no AppSecret in any log or in any request but the one that
// needs it.
func TestGateway(t *testing.T) {
	e := newGatewayEnv(t, 2, nil)
	sdkTok := e.sdkToken(1, appA, keyOrder)

	t.Run("menu read with a client key", func(t *testing.T) {
		st, _, b := e.do(0, http.MethodGet, "/cgi-bin/menu/get", bearerFor(keyOrder, "prod", appA), nil)
		if st != 200 || !strings.Contains(string(b), `"button"`) {
			t.Fatalf("menu/get = %d %s", st, b)
		}
	})
	t.Run("message send with an SDK's token, on the other replica", func(t *testing.T) {
		st, _, b := e.do(0, http.MethodPost, "/cgi-bin/message/custom/send?access_token="+sdkTok,
			http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"touser":"o1","msgtype":"text","text":{"content":"hi"}}`))
		if v := wxAnswer(t, "custom/send", st, b); errcode(v) != 0 {
			t.Fatalf("custom/send = %s", b)
		}
	})
	t.Run("media upload and download", func(t *testing.T) {
		img := bytes.Repeat([]byte("\xff\xd8\xff\xe0JFIF-image-bytes "), 20000) // ~360 KB
		var form bytes.Buffer
		mw := multipart.NewWriter(&form)
		fw, _ := mw.CreateFormFile("media", "photo.jpg")
		_, _ = fw.Write(img)
		_ = mw.Close()
		st, _, b := e.do(1, http.MethodPost, "/cgi-bin/media/upload?type=image&access_token="+sdkTok,
			http.Header{"Content-Type": {mw.FormDataContentType()}}, &form)
		var up struct {
			MediaID string `json:"media_id"`
		}
		if st != 200 || json.Unmarshal(b, &up) != nil || up.MediaID == "" {
			t.Fatalf("media/upload = %d %s", st, b)
		}
		st, h, b := e.do(0, http.MethodGet, "/cgi-bin/media/get?media_id="+url.QueryEscape(up.MediaID), bearerFor(keyOrder, "prod", appA), nil)
		if st != 200 || !bytes.Equal(b, img) || !strings.HasPrefix(h.Get("Content-Type"), "image/") {
			t.Fatalf("media/get = %d %s, %d bytes; want the %d uploaded bytes", st, h.Get("Content-Type"), len(b), len(img))
		}
	})
	t.Run("QR code image", func(t *testing.T) {
		st, h, b := e.do(1, http.MethodPost, "/wxa/getwxacodeunlimit?access_token="+sdkTok,
			http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"scene":"order=42"}`))
		if st != 200 || h.Get("Content-Type") != "image/png" || !bytes.HasPrefix(b, []byte("\x89PNG")) ||
			!bytes.Contains(b, []byte("order=42")) {
			t.Fatalf("getwxacodeunlimit = %d %s %q", st, h.Get("Content-Type"), b)
		}
	})
	t.Run("an injected 40001 costs one retry and one token call", func(t *testing.T) {
		calls, generic := e.tokenCalls(appA), e.sim.Calls("generic", appA)
		retries := e.sumRetries(appA, metrics.RetrySuccess)
		e.sim.Fail("generic", 1, wechattest.Fault{Errcode: 40001})
		// The broker's check of the token agrees with WeChat's answer.
		e.sim.Fail(wechat.APIDomainIP, 1, wechattest.Fault{Errcode: 40001})
		st, _, b := e.do(1, http.MethodPost, "/cgi-bin/message/custom/send?access_token="+sdkTok,
			http.Header{"Content-Type": {"application/json"}}, strings.NewReader(`{"touser":"o1","msgtype":"text"}`))
		if v := wxAnswer(t, "custom/send after 40001", st, b); errcode(v) != 0 {
			t.Fatalf("custom/send after an injected 40001 = %s; want the retry's success", b)
		}
		if got := e.tokenCalls(appA) - calls; got != 1 {
			t.Errorf("token calls for the retry = %d; want 1", got)
		}
		if got := e.sim.Calls("generic", appA) - generic; got != 2 {
			t.Errorf("WeChat saw %d sends; want 2 (the request and one retry)", got)
		}
		if got := e.sumRetries(appA, metrics.RetrySuccess) - retries; got != 1 {
			t.Errorf("wxbroker_gateway_retries_total{success} grew by %v; want 1", got)
		}
		if got := testutil.ToFloat64(e.replicas[1].m.InvalidCredential.WithLabelValues("prod", appA, metrics.SourceProxy)); got < 1 {
			t.Errorf("wxbroker_invalid_credential_total{source=proxy} = %v; want >= 1", got)
		}
	})
	t.Run("a token killed outside: 200 concurrent SDK calls, one token fetch", func(t *testing.T) {
		dead := e.sdkToken(0, appA, keyOrder)
		// Another process fetches a token with the same AppID.
		resp, err := http.Get(e.sim.URL + "/cgi-bin/token?grant_type=client_credential&appid=" + appA + "&secret=" + gwSecrets[appA])
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		deadline := time.Now().Add(10 * time.Second)
		for e.sim.TokenValid(appA, dead) {
			if time.Now().After(deadline) {
				t.Fatal("the outside fetch did not kill the broker's token")
			}
			time.Sleep(5 * time.Millisecond)
		}
		calls, ext0 := e.tokenCalls(appA), e.external(appA)
		var wg sync.WaitGroup
		errs := make(chan string, 200)
		for i := range 200 {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodPost, e.replicas[i%2].url+"/cgi-bin/message/custom/send?access_token="+dead,
					strings.NewReader(`{"touser":"o1","msgtype":"text"}`))
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Contains(b, []byte(`"errcode":0`)) {
					errs <- string(b)
				}
			})
		}
		wg.Wait()
		close(errs)
		for msg := range errs {
			t.Errorf("a call holding the dead token: %s", msg)
		}
		if got := e.tokenCalls(appA) - calls; got != 1 {
			t.Errorf("token fetches after the outside fetch = %d; want exactly 1", got)
		}
		if got := e.external(appA) - ext0; got != 1 {
			t.Errorf("wxbroker_external_invalidation_total grew by %v; want 1", got)
		}
	})
	t.Run("refusals answer in WeChat's shape", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			path   string
			header http.Header
			want   int
		}{
			{"no credential", "/cgi-bin/menu/get", nil, 41001},
			{"a token the broker never handed out", "/cgi-bin/menu/get?access_token=90_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", nil, 40001},
			{"an unknown client key", "/cgi-bin/menu/get", bearerFor("no-such-key-123456", "prod", appA), 40001},
			{"a client key outside its allow-list", "/cgi-bin/menu/get", bearerFor(keyOrder, "prod", appB), 40001},
			{"another namespace", "/cgi-bin/menu/get", bearerFor(keyStg, "prod", appA), 40001},
			{"a client key without " + appHeader, "/cgi-bin/menu/get", http.Header{"Authorization": {"Bearer " + keyOrder}}, 41002},
			{"an unknown app", "/cgi-bin/menu/get", bearerFor(keySRE, "prod", "wx00000000000000ff"), 40013},
			{"quota reset by a non-admin", "/cgi-bin/clear_quota?access_token=" + sdkTok, nil, 48001},
			{"quota reset by a non-admin key", "/cgi-bin/openapi/quota/clear", bearerFor(keyOrder, "prod", appA), 48001},
			{"a credential endpoint", "/cgi-bin/component/api_component_token", bearerFor(keySRE, "prod", appA), 48001},
			{"a non-canonical path", "/cgi-bin/menu/../clear_quota?access_token=" + sdkTok, nil, 48001},
		} {
			wechatBefore := len(e.rec.all())
			st, _, b := e.do(0, http.MethodPost, c.path, c.header, strings.NewReader(`{}`))
			if v := wxAnswer(t, c.name, st, b); errcode(v) != c.want {
				t.Errorf("%s: %s; want errcode %d", c.name, b, c.want)
			}
			if n := len(e.rec.all()) - wechatBefore; n != 0 {
				t.Errorf("%s: %d requests reached WeChat; want none", c.name, n)
			}
		}
		st, _, b := e.do(0, http.MethodPost, "/cgi-bin/clear_quota", bearerFor(keySRE, "prod", appA), strings.NewReader(`{"appid":"`+appA+`"}`))
		if v := wxAnswer(t, "quota reset by an admin", st, b); errcode(v) != 0 {
			t.Errorf("quota reset by an admin key = %s; want it forwarded", b)
		}
		st, _, b = e.do(0, http.MethodGet, "/v1/no/such/route", nil, nil)
		if st != http.StatusNotFound || !strings.Contains(string(b), `"error"`) {
			t.Errorf("unknown /v1/ route = %d %s; want the broker's own 404", st, b)
		}
	})
	t.Run("AppSecret APIs get the secret from the broker", func(t *testing.T) {
		code := e.sim.MintLoginCode(appA, "alice")
		st, _, b := e.do(1, http.MethodGet, "/sns/jscode2session?js_code="+code+"&grant_type=authorization_code",
			bearerFor(keyOrder, "prod", appA), nil)
		if v := wxAnswer(t, "jscode2session", st, b); v["openid"] != e.sim.OpenID(appA, "alice") {
			t.Errorf("jscode2session with a client key = %s", b)
		}
		// A WeChat SDK sends its configured secret: the client key.
		code = e.sim.MintLoginCode(appA, "bob")
		st, _, b = e.do(0, http.MethodGet, "/sns/jscode2session?appid="+appA+"&secret="+keyOrder+"&js_code="+code+"&grant_type=authorization_code", nil, nil)
		if v := wxAnswer(t, "jscode2session (SDK)", st, b); v["openid"] != e.sim.OpenID(appA, "bob") {
			t.Errorf("jscode2session with secret=<client key> = %s", b)
		}
		st, _, b = e.do(0, http.MethodGet, "/sns/jscode2session?appid="+appB+"&secret="+keyOrder+"&js_code=x", nil, nil)
		if v := wxAnswer(t, "jscode2session outside the allow-list", st, b); errcode(v) != 40001 {
			t.Errorf("jscode2session for an app outside the allow-list = %s; want 40001", b)
		}
	})

	// No AppSecret in anything the service sent, in any log, in any audit
	// line, nor in any request the gateway forwarded except the
	// jscode2session calls, which WeChat answers only with it. Closing the
	// APIs flushes their buffered audit logs (written every second otherwise).
	for _, r := range e.replicas {
		if err := r.api.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for appid, secret := range gwSecrets {
		for _, r := range e.sent.all() {
			if strings.Contains(r.query+string(r.body)+fmt.Sprint(r.header), secret) {
				t.Errorf("the service sent the AppSecret of %s: %s %s", appid, r.method, r.path)
			}
		}
		if strings.Contains(e.logs.String(), secret) || strings.Contains(e.audit.String(), secret) {
			t.Errorf("the AppSecret of %s is in the logs", appid)
		}
		for _, r := range e.rec.all() {
			has := strings.Contains(r.query+string(r.body)+fmt.Sprint(r.header), secret)
			if has && !(r.path == "/sns/jscode2session" && appid == appA) {
				t.Errorf("the gateway sent the AppSecret of %s to %s", appid, r.path)
			}
		}
	}
	for _, r := range e.rec.all() {
		for k := range r.header {
			if k == "Authorization" || strings.HasPrefix(k, "X-Wxbroker-") {
				t.Errorf("the gateway forwarded header %s to %s", k, r.path)
			}
		}
		if strings.Contains(r.query, keyOrder) || strings.Contains(r.query, keySRE) {
			t.Errorf("the gateway forwarded a client key to %s", r.path)
		}
	}
	if !strings.Contains(e.audit.String(), `"event":"gateway"`) {
		t.Errorf("no gateway audit line in %q", e.audit.String())
	}
	got := testutil.ToFloat64(e.replicas[0].m.Gateway.Requests.WithLabelValues("prod", appA, "/cgi-bin/menu/get", metrics.GatewayOK, "0"))
	if got != 1 {
		t.Errorf(`wxbroker_gateway_requests_total{api="/cgi-bin/menu/get",result="ok"} = %v; want 1`, got)
	}
}

// TestGatewayRefusesExpiredToken: a token the broker handed out is accepted
// until its own expiry, by every replica (including one started after the
// token was replaced, which finds it in Redis), and refused in WeChat's
// shape afterwards.
func TestGatewayRefusesExpiredToken(t *testing.T) {
	clk := clocktest.New(time.Now())
	e := newGatewayEnv(t, 2, clk.Now)
	old := e.sdkToken(0, appA, keyOrder)
	// Replace it: the old token is superseded but not expired.
	tok, err := e.replicas[0].b.Invalidate(context.Background(), "prod", appA, old, metrics.SourceClient)
	if err != nil || tok.AccessToken == old {
		t.Fatalf("Invalidate = %v, %v", tok, err)
	}
	for i := range e.replicas {
		st, _, b := e.do(i, http.MethodGet, "/cgi-bin/menu/get?access_token="+old, nil, nil)
		if v := wxAnswer(t, "superseded token", st, b); errcode(v) != 0 {
			t.Errorf("replica %d: a superseded, unexpired token = %s; want it accepted", i, b)
		}
	}
	// A replica that never saw the old token learns it from Redis.
	late, err := New(Options{Tokens: brokertest.Run(t, broker.Options{Config: e.cfg, Redis: redisOf(t, e), WeChat: mustWeChat(t, e.sim.URL),
		Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()), Now: clk.Now, InstanceID: "late"}),
		Config: e.cfg, Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()), AuditWriter: io.Discard, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = late.Close() })
	lateSrv := httptest.NewServer(late.Handler())
	t.Cleanup(lateSrv.Close)
	waitGateway(t, lateSrv.URL+"/cgi-bin/menu/get?access_token="+old, 0)

	clk.Advance(7201 * time.Second)
	for _, u := range []string{e.replicas[0].url, e.replicas[1].url, lateSrv.URL} {
		resp, err := http.Get(u + "/cgi-bin/menu/get?access_token=" + old)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if v := wxAnswer(t, "expired token", resp.StatusCode, b); errcode(v) != 40001 {
			t.Errorf("%s: a token past its own expiry = %s; want errcode 40001", u, b)
		}
	}
}

// redisOf returns a client of the environment's redis-server.
func redisOf(t *testing.T, e *gwEnv) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: e.cfg.Redis.Addrs[0]})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitGateway polls u until it answers errcode want (the late replica loads
// its cache first).
func waitGateway(t *testing.T, u string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last []byte
	for time.Now().Before(deadline) {
		resp, err := http.Get(u)
		if err == nil {
			last, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			var v map[string]any
			if json.Unmarshal(last, &v) == nil && errcode(v) == want {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never answered errcode %d; last %s", u, want, last)
}
