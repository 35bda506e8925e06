package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	devSynopsis = "[--listen ADDR] [--public-listen ADDR] [--log-level LEVEL]"
	devSummary  = "DEVELOPMENT ONLY: everything in one process (embedded Redis, WeChat simulator, demo config)"
)

// Demo apps of dev mode. The simulator accepts exactly these.
var devApps = []struct {
	ns, appid, secret, kind, mode string
	tickets                       []string
}{
	{"prod", "wxd0000000000000a1", "dev-secret-prod-miniprogram", config.KindMiniProgram, config.ModeStable, nil},
	{"prod", "wxd0000000000000a2", "dev-secret-prod-official", config.KindOfficialAccount, config.ModeClassic, []string{"jsapi"}},
	{"prod", "wxd0000000000000a3", "dev-secret-prod-website", config.KindWebsite, config.ModeStable, nil},
	{"staging", "wxd0000000000000b1", "dev-secret-staging-miniprogram", config.KindMiniProgram, config.ModeStable, nil},
}

// The demo Open Platform component (third-party platform) of dev mode and
// the accounts that authorize it once the broker runs; only with a public
// listener, which serves its event URL.
const (
	devComponentNS     = "prod"
	devComponentAppID  = "wxd0000000000000c1"
	devComponentSecret = "dev-secret-prod-component"
	devComponentToken  = "devcomponenttoken"
)

var devAuthorizers = []string{"wxd0000000000000d1", "wxd0000000000000d2", "wxd0000000000000d3"}

// Dev lifetimes: short, so that refreshes happen while you watch.
const (
	devTicketPush     = time.Minute // WeChat pushes a verify ticket every 10 minutes
	devTokenTTL       = 2 * time.Minute
	devOverlap        = 20 * time.Second
	devRotationWindow = 30 * time.Second
	devForceInterval  = 5 * time.Second
)

func devCommand() command {
	return command{synopsis: devSynopsis, summary: devSummary, run: runDev}
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dev", devSynopsis, devSummary, stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "internal API address (loopback only)")
	public := fs.String("public-listen", "127.0.0.1:8081", "login endpoints address (loopback only); empty: no login")
	level := fs.String("log-level", "info", "log level (debug, info, warn, error)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	for _, a := range []string{*listen, *public} {
		if a != "" && !loopback(a) {
			fmt.Fprintf(stderr, "wxbroker dev: %q is not a loopback address: dev mode listens on 127.0.0.1 only\n", a)
			return exitUsage
		}
	}
	log, err := newLogger(config.Log{Level: *level, Format: "console"}, zapcore.Lock(zapcore.AddSync(stderr)))
	if err != nil {
		fmt.Fprintf(stderr, "wxbroker dev: %v\n", err)
		return exitUsage
	}
	defer func() { _ = log.Sync() }()
	if err := dev(ctx, *listen, *public, log, stdout, stderr); err != nil {
		log.Error("wxbroker dev stopped", zap.Error(err))
		return exitFailure
	}
	return exitOK
}

func dev(ctx context.Context, listen, public string, log *zap.Logger, stdout, stderr io.Writer) error {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("start embedded redis: %w", err)
	}
	defer mr.Close()
	// miniredis counts TTLs down only when told to: without this, the
	// force_min_interval marker, the leader lock and the day counters would
	// never expire (every report after the first answered 429).
	stopClock := runMiniredisClock(ctx, mr, devClockTick)
	defer stopClock()

	sim := wechattest.NewServer(wechattest.Options{
		TokenTTL: devTokenTTL, Overlap: devOverlap, RotationWindow: devRotationWindow,
		ForceMinInterval: devForceInterval, TicketTTL: devTokenTTL, TicketPushInterval: devTicketPush,
	})
	defer sim.Close()
	for _, a := range devApps {
		sim.AddApp(a.appid, a.secret)
	}

	// Ports are fixed before the config is built, because the login
	// redirect URI must name the public port.
	var err error
	if listen, err = resolvePort(listen); err != nil {
		return err
	}
	if public != "" {
		if public, err = resolvePort(public); err != nil {
			return err
		}
	}
	key := "wxb_dev_" + rand.Text()
	aesKey := make([]byte, 32)
	_, _ = rand.Read(aesKey) // crypto/rand.Read never fails
	comp := wechattest.Component{
		AppID: devComponentAppID, Secret: devComponentSecret, Token: devComponentToken,
		EncodingAESKey: base64.RawStdEncoding.EncodeToString(aesKey),
	}
	cfg, err := devConfig(listen, public, mr.Addr(), sim.URL, key, comp)
	if err != nil {
		return err
	}
	if public != "" {
		// Known to the simulator from the start (the leader's
		// api_start_push_ticket succeeds), pushing once the event URL is
		// served (devPlatform).
		if err := sim.AddComponent(comp); err != nil {
			return fmt.Errorf("simulator component: %w", err)
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer func() { _ = rdb.Close() }()
	var once sync.Once
	// dev has no file to reload, but a SIGHUP must not end it either.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return runSystem(ctx, system{
		Config: cfg, Redis: rdb, Logger: log, AuditWriter: stderr, ReadyAll: true, Reloads: hup,
		OnReady: func(internal, pub net.Addr) {
			once.Do(func() {
				if pub != nil {
					// The event URL is served now: the simulator's first
					// ticket push reaches it.
					comp.EventURL = "http://" + pub.String() + "/open/" + comp.AppID + "/events"
					if err := devPlatform(ctx, sim.Sim, comp, "http://"+internal.String(), key); err != nil {
						log.Warn("dev: demo platform incomplete", zap.Error(err))
					}
				}
				printDevBanner(stdout, cfg, internal, pub, sim.URL, mr.Addr(), key)
			})
		},
	})
}

// devClockTick is how often dev mode moves the embedded Redis's clock.
const devClockTick = 100 * time.Millisecond

// runMiniredisClock moves mr's TTL clock along with the wall clock every
// tick until ctx ends or the returned stop is called (which waits for it).
func runMiniredisClock(ctx context.Context, mr *miniredis.Miniredis, tick time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now := time.Now()
			mr.FastForward(now.Sub(last))
			last = now
		}
	}()
	return func() { cancel(); <-done }
}

// devPlatform gives the simulator the demo component's event URL (which
// gets a verify-ticket push at once), waits until the broker serves
// the component token minted with it, and has the demo authorizers
// authorize the component (each an authorized push the broker exchanges
// with api_query_auth).
func devPlatform(ctx context.Context, sim *wechattest.Sim, comp wechattest.Component, base, key string) error {
	if err := sim.AddComponent(comp); err != nil {
		return fmt.Errorf("simulator component: %w", err)
	}
	url := base + "/v1/namespaces/" + devComponentNS + "/components/" + comp.AppID + "/access_token"
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, err := devGet(ctx, url, key)
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no component token within 20s (last answer %d, %v)", code, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, a := range devAuthorizers {
		if _, err := sim.Authorize(ctx, comp.AppID, a); err != nil {
			return fmt.Errorf("authorize %s: %w", a, err)
		}
	}
	return nil
}

// devGet GETs url with the client key and returns the status code.
func devGet(ctx context.Context, url, key string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// devConfig is the demo configuration: two namespaces, the demo apps, one
// admin client with key, generated login keys, lifetimes scaled down; with
// a public listener also the demo component (comp).
func devConfig(listen, public, redisAddr, simURL, key string, comp wechattest.Component) (*config.Config, error) {
	cfg := config.Default()
	cfg.InstanceID = "dev"
	cfg.Listen = listen
	cfg.PublicListen = public
	cfg.Log = config.Log{Level: "info", Format: "console"}
	cfg.Redis.Addrs = []string{redisAddr}
	cfg.WeChat = config.WeChat{BaseURL: simURL, Timeout: 2 * time.Second}
	cfg.Refresh.StableRotationWindow = devRotationWindow
	cfg.Refresh.ForceMinInterval = devForceInterval
	cfg.Namespaces = map[string]*config.Namespace{}
	for _, a := range devApps {
		ns := cfg.Namespaces[a.ns]
		if ns == nil {
			ns = &config.Namespace{}
			cfg.Namespaces[a.ns] = ns
		}
		ns.Apps = append(ns.Apps, &config.App{
			AppID: a.appid, Secret: config.Secret(a.secret), Kind: a.kind, TokenMode: a.mode, Tickets: a.tickets,
		})
	}
	cfg.Clients = []config.Client{{Name: "dev", KeySHA256: config.HashKey(key), Allow: []string{"*/*", "*/*/*"}, Admin: true}}
	if public != "" && comp.AppID != "" {
		cfg.Namespaces[devComponentNS].Components = []*config.Component{{
			AppID: comp.AppID, Secret: config.Secret(comp.Secret), Token: config.Secret(comp.Token),
			EncodingAESKey: config.Secret(comp.EncodingAESKey),
		}}
		rtKey := make([]byte, 32)
		_, _ = rand.Read(rtKey) // crypto/rand.Read never fails
		cfg.OpenPlatform.RefreshTokenEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString(rtKey))
	}
	if public != "" {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate jwt key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("encode jwt key: %w", err)
		}
		cfg.Login.JWT.SigningKey = config.Secret(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		aes := make([]byte, 32)
		_, _ = rand.Read(aes) // crypto/rand.Read never fails
		cfg.Login.SessionKeyEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString(aes))
		cfg.Login.MiniProgram = config.LoginApp{Namespace: "prod", AppID: devApps[0].appid}
		secure := false
		cfg.Login.Web = config.WebLogin{
			Namespace:         "prod",
			AppID:             devApps[2].appid,
			RedirectURI:       "http://" + public + "/api/v1/auth/web/callback",
			QRConnectURL:      simURL + "/connect/qrconnect",
			AllowedReturnURLs: []string{"http://" + public + "/"},
			CookieSecure:      &secure,
		}
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dev config: %w", err)
	}
	if err := cfg.Compile(); err != nil {
		return nil, fmt.Errorf("dev config: %w", err)
	}
	return cfg, nil
}

func printDevBanner(w io.Writer, cfg *config.Config, internal, public net.Addr, simURL, redisAddr, key string) {
	base := "http://" + internal.String()
	auth := "-H 'Authorization: Bearer " + key + "'"
	mp, oa := devApps[0], devApps[1]
	var b strings.Builder
	line := strings.Repeat("=", 78)
	fmt.Fprintf(&b, "%s\n  wxbroker dev: DEVELOPMENT ONLY. Embedded Redis, simulated WeChat, generated keys.\n", line)
	fmt.Fprintf(&b, "  Nothing here is persistent or secure; never point real apps or secrets at it.\n%s\n\n", line)
	fmt.Fprintf(&b, "internal API      %s\n", base)
	if public != nil {
		fmt.Fprintf(&b, "login endpoints   http://%s\n", public)
	}
	fmt.Fprintf(&b, "WeChat simulator  %s  (tokens live %s)\n", simURL, devTokenTTL)
	fmt.Fprintf(&b, "embedded Redis    %s\n", redisAddr)
	fmt.Fprintf(&b, "demo client key   %s  (admin, may read */* and */*/*)\n\n", key)
	fmt.Fprintln(&b, "apps:")
	for _, a := range devApps {
		fmt.Fprintf(&b, "  %-8s %s  %-16s %-7s %s\n", a.ns, a.appid, a.kind, a.mode, strings.Join(a.tickets, ","))
	}
	fmt.Fprintln(&b, "\ntry:")
	fmt.Fprintf(&b, "# token read\ncurl -sS %s %s/v1/namespaces/prod/apps/%s/access_token\n", auth, base, mp.appid)
	fmt.Fprintf(&b, "# report a token that met 40001 (refreshes only if it is still the current one)\n"+
		"curl -sS -X POST %s -d '{\"access_token\":\"PASTE-THE-FAILED-TOKEN\"}' %s/v1/namespaces/prod/apps/%s/access_token/invalidate\n",
		auth, base, mp.appid)
	fmt.Fprintf(&b, "# JS-SDK ticket\ncurl -sS %s %s/v1/namespaces/prod/apps/%s/tickets/jsapi\n", auth, base, oa.appid)
	fmt.Fprintf(&b, "# JS-SDK signature for a page\ncurl -sS -X POST %s -d '{\"url\":\"https://example.com/page\"}' %s/v1/namespaces/prod/apps/%s/jssdk/signature\n",
		auth, base, oa.appid)
	fmt.Fprintf(&b, "# WeChat-compatible route (point an existing SDK's base URL at %s)\ncurl -sS '%s/cgi-bin/token?grant_type=client_credential&appid=%s&secret=%s'\n",
		base, base, oa.appid, key)
	fmt.Fprintf(&b, "# any WeChat API through the gateway: the broker puts the current token in and retries once on 40001\n"+
		"curl -sS %s -H 'X-Wxbroker-App: prod/%s' %s/cgi-bin/menu/get\n", auth, oa.appid, base)
	if public != nil && len(cfg.Namespaces[devComponentNS].Components) > 0 {
		pub := "http://" + public.String()
		cb := base + "/v1/namespaces/" + devComponentNS + "/components/" + devComponentAppID
		fmt.Fprintf(&b, "# Open Platform: the demo component %s (event URL %s/open/%s/events; a ticket push every %s)\n",
			devComponentAppID, pub, devComponentAppID, devTicketPush)
		fmt.Fprintf(&b, "curl -sS %s %s/access_token\n", auth, cb)
		fmt.Fprintf(&b, "# its authorizers and their state, then one authorizer's token\ncurl -sS %s %s/authorizers\n", auth, cb)
		fmt.Fprintf(&b, "curl -sS %s %s/authorizers/%s/access_token\n", auth, cb, devAuthorizers[0])
		fmt.Fprintf(&b, "# a WeChat API as that authorizer, through the gateway\n"+
			"curl -sS %s -H 'X-Wxbroker-App: %s/%s/%s' %s/cgi-bin/menu/get\n", auth, devComponentNS, devComponentAppID, devAuthorizers[0], base)
		fmt.Fprintf(&b, "# onboard a merchant: the authorization link (api_create_preauthcode)\n"+
			"curl -sS %s '%s/preauth_url?redirect_uri=%s/'\n", auth, cb, pub)
		fmt.Fprintf(&b, "# a merchant authorizes, then revokes (the simulator pushes authorized / unauthorized)\n"+
			"curl -sS -X POST %s/sim/components/authorize -d '{\"component_appid\":\"%s\",\"authorizer_appid\":\"wxd0000000000000d9\"}'\n"+
			"curl -sS -X POST %s/sim/components/revoke -d '{\"component_appid\":\"%s\",\"authorizer_appid\":\"wxd0000000000000d9\"}'\n",
			simURL, devComponentAppID, simURL, devComponentAppID)
	}
	fmt.Fprintf(&b, "# status (admin)\ncurl -sS %s %s/v1/status\n", auth, base)
	fmt.Fprintf(&b, "# metrics\ncurl -sS %s/metrics | grep '^wxbroker_'\n", base)
	if public != nil && cfg.LoginEnabled() {
		pub := "http://" + public.String()
		fmt.Fprintf(&b, "# website QR login: open in a browser\n%s/login\n", pub)
		fmt.Fprintf(&b, "# mini-program login: mint a code at the simulator, then log in with it\n"+
			"curl -sS -X POST %s/sim/codes/login -d '{\"appid\":\"%s\",\"person\":\"alice\"}'\n"+
			"curl -sS -X POST -H 'Content-Type: application/json' -d '{\"code\":\"PASTE-THE-CODE\"}' %s/api/v1/auth/wx-login\n",
			simURL, mp.appid, pub)
	}
	fmt.Fprintf(&b, "\n%s\n", line)
	_, _ = io.WriteString(w, b.String())
}

// loopback reports whether addr's host is a loopback IP or localhost.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// resolvePort replaces port 0 by a free port, so the address can be written
// into the config (login redirect URI) before the servers bind it.
func resolvePort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port on %s: %w", host, err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}
