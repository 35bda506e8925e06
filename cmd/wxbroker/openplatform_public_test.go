package main

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/internal/waittest"
	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	pubApp       = "wx04a7af67c8f47620"
	pubComponent = "wx0123456789abcdef"
	pubMsgToken  = "msgToken4711"
	pubAESKey    = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	pubAdminKey  = "wxb_test_public_admin"
)

// eventsOnlyPlatform is the Open Platform engine as runSystem's consumers
// see it: it records the events handed on and keeps a replay store; the
// token reads answer ErrNoToken (nothing fetched yet).
type eventsOnlyPlatform struct {
	mu     sync.Mutex
	events []msgcrypt.Event
	seen   map[string]bool
}

func (p *eventsOnlyPlatform) Component(ns, appid string) bool {
	return ns == "open" && appid == pubComponent
}

func (p *eventsOnlyPlatform) check(ns, comp string) error {
	if !p.Component(ns, comp) {
		return broker.ErrUnknownComponent
	}
	return nil
}

func (p *eventsOnlyPlatform) ComponentToken(ns, comp string) (broker.Token, error) {
	if err := p.check(ns, comp); err != nil {
		return broker.Token{}, err
	}
	return broker.Token{}, broker.ErrNoToken
}

func (p *eventsOnlyPlatform) AuthorizerToken(ns, comp, _ string) (broker.Token, error) {
	if err := p.check(ns, comp); err != nil {
		return broker.Token{}, err
	}
	return broker.Token{}, broker.ErrUnknownAuthorizer
}

func (p *eventsOnlyPlatform) ReportComponent(_ context.Context, ns, comp string, _ broker.Report) (broker.Token, error) {
	return p.ComponentToken(ns, comp)
}

func (p *eventsOnlyPlatform) ReportAuthorizer(_ context.Context, ns, comp, a string, _ broker.Report) (broker.Token, error) {
	return p.AuthorizerToken(ns, comp, a)
}

func (p *eventsOnlyPlatform) ByToken(string) (string, string, string, bool) { return "", "", "", false }

func (p *eventsOnlyPlatform) Authorizers(_ context.Context, ns, comp string) ([]broker.Authorizer, error) {
	return nil, p.check(ns, comp)
}

func (p *eventsOnlyPlatform) Import(_ context.Context, ns, comp string, in []broker.RefreshTokenEntry) (broker.ImportResult, error) {
	return broker.ImportResult{Imported: len(in)}, p.check(ns, comp)
}

func (p *eventsOnlyPlatform) Export(_ context.Context, ns, comp string) ([]broker.RefreshTokenEntry, error) {
	return nil, p.check(ns, comp)
}

func (p *eventsOnlyPlatform) PreAuthURL(_ context.Context, ns, comp, _ string) (string, error) {
	return "", p.check(ns, comp)
}

func (p *eventsOnlyPlatform) HandleEvent(_ context.Context, ns, comp string, ev msgcrypt.Event) error {
	if err := p.check(ns, comp); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
	return nil
}

func (p *eventsOnlyPlatform) FirstSeen(_ context.Context, ns, comp, key string, _ time.Duration) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := ns + "/" + comp + "/" + key
	if p.seen[k] {
		return false, nil
	}
	p.seen[k] = true
	return true, nil
}

func (p *eventsOnlyPlatform) eventList() []msgcrypt.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]msgcrypt.Event(nil), p.events...)
}

// componentSystemConfig is one app (so that the broker becomes ready), one
// component in namespace "open", no login; public is public_listen
// ("" or any address: it is bound to a free port).
func componentSystemConfig(t *testing.T, public string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.InstanceID = "public-test"
	cfg.Listen = "127.0.0.1:8080"
	cfg.PublicListen = public
	cfg.Redis.Addrs = []string{"127.0.0.1:6379"} // runComponentSystem puts its own
	cfg.Redis.KeyPrefix = "pub" + strings.ReplaceAll(t.Name(), "/", "_")
	cfg.WeChat = config.WeChat{BaseURL: "http://127.0.0.1:1", Timeout: 2 * time.Second} // as Redis
	cfg.Namespaces = map[string]*config.Namespace{
		"prod": {Apps: []*config.App{{AppID: pubApp, Secret: "s3cr3t-value", Kind: "miniprogram", TokenMode: "stable"}}},
		"open": {Apps: []*config.App{}, Components: []*config.Component{{
			AppID: pubComponent, Secret: "cs", Token: pubMsgToken, EncodingAESKey: pubAESKey,
		}}},
	}
	cfg.OpenPlatform.RefreshTokenEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString(make([]byte, 32)))
	cfg.Clients = []config.Client{{Name: "sre", KeySHA256: config.HashKey(pubAdminKey), Allow: []string{"*/*"}, Admin: true}}
	if cfg.LoginEnabled() {
		t.Fatal("the test config enables login")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	// Validated with fixed ports; bound to free ones.
	cfg.Listen = "127.0.0.1:0"
	if cfg.PublicListen != "" {
		cfg.PublicListen = "127.0.0.1:0"
	}
	return cfg
}

// runComponentSystem runs runSystem with engine as its Open Platform
// engine until the test ends and returns the bound addresses.
func runComponentSystem(t *testing.T, cfg *config.Config, engine openPlatform, log *zap.Logger) (internal, public net.Addr) {
	t.Helper()
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	sim.AddApp(pubApp, "s3cr3t-value")
	cfg.WeChat.BaseURL = sim.URL
	rs := redistest.Start(t)
	cfg.Redis.Addrs = []string{rs.Addr}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- runSystem(ctx, system{
			Config: cfg, Redis: newRedis(cfg.Redis), Logger: log, AuditWriter: &strings.Builder{},
			OnReady:  func(i, p net.Addr) { ready <- [2]net.Addr{i, p} },
			platform: func(*broker.Broker) openPlatform { return engine },
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runSystem: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("runSystem did not return 30 s after its context ended")
		}
	})
	select {
	case a := <-ready:
		return a[0], a[1]
	case err := <-done:
		t.Fatalf("runSystem ended before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("runSystem not ready within 30 s")
	}
	return nil, nil
}

// TestPublicListenerForComponentsWithoutLogin: with a component configured
// and login off, public_listen is served all the same: WeChat's encrypted
// pushes to /open/{component_appid}/events reach the engine; the login
// paths answer 404; the component routes of the internal API reach the
// same engine.
func TestPublicListenerForComponentsWithoutLogin(t *testing.T) {
	engine := &eventsOnlyPlatform{seen: map[string]bool{}}
	cfg := componentSystemConfig(t, "127.0.0.1:8081")
	internal, public := runComponentSystem(t, cfg, engine, zap.NewNop())
	if public == nil {
		t.Fatal("no public listener with a component configured and login off")
	}

	eventURL := "http://" + public.String() + "/open/" + pubComponent + "/events"
	push := wechattest.New(wechattest.Options{})
	if err := push.AddComponent(wechattest.Component{AppID: pubComponent, Secret: "cs", Token: pubMsgToken,
		EncodingAESKey: pubAESKey, EventURL: eventURL}); err != nil {
		t.Fatal(err)
	}
	ticket, err := push.PushTicket(context.Background(), pubComponent)
	if err != nil {
		t.Fatalf("ticket push to the public listener: %v", err)
	}
	waittest.For(t, "the ticket to reach the engine", 10*time.Second, func() bool {
		evs := engine.eventList()
		return len(evs) == 1 && evs[0].InfoType == msgcrypt.InfoVerifyTicket && evs[0].VerifyTicket == ticket
	})

	for _, path := range []string{"/api/v1/auth/wx-login", "/open/" + pubComponent + "/other", "/"} {
		resp, err := http.Post("http://"+public.String()+path, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("POST %s on the public listener without login = %d; want 404", path, resp.StatusCode)
		}
	}

	req, _ := http.NewRequest(http.MethodGet, "http://"+internal.String()+"/v1/namespaces/open/components/"+pubComponent+"/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+pubAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("component token before the engine has one = %d; want 503 (the engine's ErrNoToken)", resp.StatusCode)
	}
}

// TestNoPublicListenerWarnsForComponents: components but no public_listen:
// the broker runs, serves no event URL and says so in a warning.
func TestNoPublicListenerWarnsForComponents(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := componentSystemConfig(t, "")
	_, public := runComponentSystem(t, cfg, &eventsOnlyPlatform{seen: map[string]bool{}}, zap.New(core))
	if public != nil {
		t.Errorf("public listener on %s without public_listen", public)
	}
	if logs.FilterMessageSnippet("no event URL is served").Len() != 1 {
		t.Errorf("warnings = %v; want one saying no event URL is served", logs.All())
	}
}
