package login

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/clocktest"
	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	mpAppID   = "wx1111111111111111"
	mpSecret  = "mpsecret00112233445566778899aabb"
	webAppID  = "wx2222222222222222"
	webSecret = "websecretccddeeff0011223344556677"
	testNS    = "prod"
)

// fakeTokens stands in for the broker: it fetches classic tokens from the
// simulator and records every Invalidate.
type fakeTokens struct {
	wx *wechat.Client

	mu            sync.Mutex
	cur           string
	invalidations []string // sources
}

func (f *fakeTokens) AccessToken(ns, appid string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ns != testNS || appid != mpAppID {
		return broker.Token{}, broker.ErrUnknownApp
	}
	if f.cur == "" {
		t, err := f.wx.Token(context.Background(), mpAppID, mpSecret)
		if err != nil {
			return broker.Token{}, err
		}
		f.cur = t.AccessToken
	}
	return broker.Token{AccessToken: f.cur, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *fakeTokens) Invalidate(ctx context.Context, ns, appid, failed, source string) (broker.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.invalidations = append(f.invalidations, source)
	if failed == f.cur {
		t, err := f.wx.Token(ctx, mpAppID, mpSecret)
		if err != nil {
			return broker.Token{}, err
		}
		f.cur = t.AccessToken
	}
	return broker.Token{AccessToken: f.cur, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *fakeTokens) Invalidations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.invalidations...)
}

// env is one login server (plus optional replicas) against a real Redis and
// the WeChat simulator.
type env struct {
	t       *testing.T
	clock   *clocktest.Clock // shared by the simulator and the server
	sim     *wechattest.Server
	redis   *redistest.Server
	rdb     *redis.Client
	cfg     *config.Config
	wx      *wechat.Client
	tokens  Tokens
	fake    *fakeTokens
	logs    *logtest.Buffer // every log line of the servers, from debug up
	signPEM string
	aesKey  string

	srv     *Server
	URL     string
	reg     *prometheus.Registry
	http    *http.Client // no redirects followed, no cookie jar
	replica *Server      // set by addReplica

	callbackBurst int // when set, overrides the callback rate limit burst
}

type envOption func(*env)

// withCallbackBurst raises the callback rate limit for tests that call it often.
func withCallbackBurst(n int) envOption {
	return func(e *env) { e.callbackBurst = n }
}

// withTokens makes the server use tokens (e.g. the real broker) instead of the fake.
func withTokens(f func(e *env) Tokens) envOption {
	return func(e *env) { e.tokens = f(e) }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	e := &env{t: t, clock: clocktest.New(time.Now().Truncate(time.Second)), logs: &logtest.Buffer{}}
	e.sim = wechattest.NewServer(wechattest.Options{Now: e.clock.Now})
	t.Cleanup(e.sim.Close)
	e.sim.AddApp(mpAppID, mpSecret)
	e.sim.AddApp(webAppID, webSecret)
	e.redis = redistest.Start(t)
	e.rdb = e.redis.Client(t)

	var err error
	e.wx, err = wechat.New(wechat.Options{BaseURL: e.sim.URL, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("wechat.New: %v", err)
	}
	e.fake = &fakeTokens{wx: e.wx}
	e.tokens = e.fake

	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	e.signPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	e.aesKey = base64.StdEncoding.EncodeToString(k)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.URL = "http://" + ln.Addr().String()
	insecure := false
	cfg := config.Default()
	cfg.PublicListen = ln.Addr().String()
	cfg.Redis.Addrs = []string{e.redis.Addr}
	cfg.Redis.KeyPrefix = "logintest"
	cfg.WeChat.BaseURL = e.sim.URL
	cfg.WeChat.FallbackURLs = nil
	cfg.Namespaces = map[string]*config.Namespace{testNS: {Apps: []*config.App{
		{AppID: mpAppID, Secret: mpSecret, Kind: config.KindMiniProgram, TokenMode: config.ModeClassic},
		{AppID: webAppID, Secret: webSecret, Kind: config.KindWebsite, TokenMode: config.ModeClassic},
	}}}
	cfg.Login.JWT.SigningKey = config.Secret(e.signPEM)
	cfg.Login.SessionKeyEncryptionKey = config.Secret(e.aesKey)
	cfg.Login.MiniProgram = config.LoginApp{Namespace: testNS, AppID: mpAppID}
	cfg.Login.Web = config.WebLogin{
		Namespace: testNS, AppID: webAppID,
		RedirectURI:       e.URL + routeWebCallback,
		QRConnectURL:      e.sim.URL + "/connect/qrconnect",
		AllowedReturnURLs: []string{e.URL + "/login"},
		CookieSecure:      &insecure,
	}
	// The per-IP limit is off here: every test client is 127.0.0.1. The
	// tests of the limits turn it on.
	cfg.Login.RateLimit.PerMinute = 0
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	e.cfg = cfg
	for _, o := range opts {
		o(e)
	}
	e.srv, e.reg = e.newServer()
	serve(t, ln, e.srv.Handler())
	e.http = &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return e
}

// newServer builds another Server on the same config and Redis, with its
// own metrics registry.
func (e *env) newServer() (*Server, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), e.logs, zap.DebugLevel))
	s, err := New(Options{
		Config: e.cfg, Redis: e.rdb, WeChat: e.wx, Tokens: e.tokens,
		Logger: logger, Metrics: metrics.New(reg), Now: e.clock.Now,
	})
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	if e.callbackBurst > 0 {
		s.callbackBurst = e.callbackBurst
		s.echo = s.routes()
	}
	return s, reg
}

// addReplica starts a second Server on the same Redis and returns its URL.
func (e *env) addReplica() string {
	e.t.Helper()
	s, _ := e.newServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	serve(e.t, ln, s.Handler())
	e.replica = s
	return "http://" + ln.Addr().String()
}

func serve(t *testing.T, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
}

// reply is a decoded envelope.
type reply struct {
	Status    int             `json:"-"`
	Code      int             `json:"code"`
	Message   string          `json:"message"`
	Data      json.RawMessage `json:"data"`
	Error     string          `json:"error"`
	Errcode   int             `json:"errcode"`
	Hint      string          `json:"hint"`
	RID       string          `json:"rid"`
	Timestamp int64           `json:"timestamp"`
	Header    http.Header     `json:"-"`
}

// call sends a JSON request to base+path with an optional Bearer token.
func (e *env) call(method, base, path, bearerToken string, body any) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+bearerToken)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := reply{Status: resp.StatusCode, Header: resp.Header}
	if err := json.Unmarshal(raw, &r); err != nil {
		e.t.Fatalf("%s %s: status %d, body is not JSON: %v\n%s", method, path, resp.StatusCode, err, raw)
	}
	return r
}

func (e *env) post(path, bearerToken string, body any) reply {
	e.t.Helper()
	return e.call(http.MethodPost, e.URL, path, bearerToken, body)
}

// loginData is the data of a wx-login reply.
type loginData struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	User         struct {
		ID        string `json:"id"`
		OpenID    string `json:"openid"`
		Nickname  string `json:"nickname"`
		Avatar    string `json:"avatar"`
		CreatedAt string `json:"created_at"`
	} `json:"user"`
}

func decodeData[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if r.Status != http.StatusOK || r.Code != http.StatusOK {
		t.Fatalf("status %d code %d message %q; want 200", r.Status, r.Code, r.Message)
	}
	if err := json.Unmarshal(r.Data, &v); err != nil {
		t.Fatalf("decode data %s: %v", r.Data, err)
	}
	return v
}

// miniLogin logs person in on the mini program.
func (e *env) miniLogin(person, nickname, avatar string) loginData {
	e.t.Helper()
	code := e.sim.MintLoginCode(mpAppID, person)
	return decodeData[loginData](e.t, e.post(routeWxLogin, "", map[string]string{
		"code": code, "nickName": nickname, "avatarUrl": avatar,
	}))
}

// profileView is the data of a profile reply.
type profileView struct {
	ID          string `json:"id"`
	OpenID      string `json:"openid"`
	Nickname    string `json:"nickname"`
	Avatar      string `json:"avatar"`
	CreatedAt   string `json:"created_at"`
	PhoneNumber string `json:"phone_number"`
}

// get sends a GET with optional cookies and returns the raw response.
func (e *env) get(rawURL string, cookies ...*http.Cookie) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", rawURL, err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// webLogin runs the website flow over plain HTTP for person and returns the
// session cookie.
func (e *env) webLogin(person string) *http.Cookie {
	e.t.Helper()
	resp := e.get(e.URL + routeWebAuthorize)
	if resp.StatusCode != http.StatusFound {
		e.t.Fatalf("authorize: status %d; want 302", resp.StatusCode)
	}
	stateC := cookieNamed(resp, stateCookie)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || stateC == nil {
		e.t.Fatalf("authorize: location %q, state cookie %v", resp.Header.Get("Location"), stateC)
	}
	q := loc.Query()
	q.Set("person", person)
	q.Set("action", "confirm")
	confirm := e.get(e.sim.URL + "/connect/qrconnect/confirm?" + q.Encode())
	if confirm.StatusCode != http.StatusFound {
		e.t.Fatalf("sim confirm: status %d", confirm.StatusCode)
	}
	cb := e.get(confirm.Header.Get("Location"), stateC)
	if cb.StatusCode != http.StatusFound {
		body, _ := io.ReadAll(cb.Body)
		e.t.Fatalf("callback: status %d; want 302\n%s", cb.StatusCode, body)
	}
	if got, want := cb.Header.Get("Location"), e.cfg.Login.Web.AllowedReturnURLs[0]; got != want {
		e.t.Fatalf("callback redirected to %q; want %q", got, want)
	}
	sess := cookieNamed(cb, sessionCookie)
	if sess == nil || sess.Value == "" {
		e.t.Fatal("callback set no session cookie")
	}
	return sess
}

// uid returns the internal id of the user with public id pub.
func (e *env) uid(pub string) string {
	e.t.Helper()
	ctx := context.Background()
	iter := e.rdb.Scan(ctx, 0, e.srv.store.keys.user("*"), 100).Iterator()
	for iter.Next(ctx) {
		if v, _ := e.rdb.HGet(ctx, iter.Val(), fieldPublicID).Result(); v == pub {
			return strings.TrimPrefix(iter.Val(), e.srv.store.keys.user(""))
		}
	}
	e.t.Fatalf("no user has public id %q", pub)
	return ""
}
