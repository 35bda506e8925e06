package login

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// Tokens is what login needs from the broker; *broker.Broker satisfies it.
type Tokens interface {
	AccessToken(ns, appid string) (broker.Token, error)
	Invalidate(ctx context.Context, ns, appid, failedToken, source string) (broker.Token, error)
}

var _ Tokens = (*broker.Broker)(nil)

// Options configures a Server. Every field but Now is required.
type Options struct {
	Config  *config.Config // validated; uses Login, the apps' secrets, Redis key_prefix
	Redis   Redis          // holds users, refresh families, sessions, states, the denylist (store.go)
	WeChat  *wechat.Client // jscode2session, getuserphonenumber, OAuth
	Tokens  Tokens         // the broker's own access tokens (getuserphonenumber)
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Now     func() time.Time // nil: time.Now
}

// Server serves the login endpoints. It is safe for concurrent use; several
// Servers (replicas) may share one Redis. It owns the listener's plumbing
// (middleware, rate limits, errors, the JWKS) and registers the routes of
// its groups, each its own small type: authRoutes (auth.go), miniProgram
// (miniprogram.go) and webFlow (web.go, page.go), on top of users
// (users.go), families (family.go) and states (state.go), which share the
// one store (store.go).
type Server struct {
	responder
	cfg    *config.Config
	store  *store // every Redis access
	signer *signer
	log    *zap.Logger

	users    *users
	families *families
	auth     *authRoutes
	mini     *miniProgram
	web      *webFlow

	// Callback rate limit per client IP.
	callbackRate  rate.Limit
	callbackBurst int

	echo *echo.Echo
}

// flowApp is the app a login flow uses.
type flowApp struct {
	ns     string
	appid  string
	secret config.Secret
}

// Fixed parameters of the login flows.
const (
	stateTTL      = 10 * time.Minute // website OAuth state lifetime
	listenerLabel = "public"
)

// New builds a Server from validated configuration. It parses the Ed25519
// PKCS#8 PEM signing key (login.jwt.signing_key) and the AES-256 key
// (login.session_key_encryption_key) and fails when either is unusable or a
// required dependency is missing.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Config == nil:
		return nil, errors.New("login: Options.Config is required")
	case opts.Redis == nil:
		return nil, errors.New("login: Options.Redis is required")
	case opts.WeChat == nil:
		return nil, errors.New("login: Options.WeChat is required")
	case opts.Tokens == nil:
		return nil, errors.New("login: Options.Tokens is required")
	case opts.Logger == nil:
		return nil, errors.New("login: Options.Logger is required")
	case opts.Metrics == nil:
		return nil, errors.New("login: Options.Metrics is required")
	}
	cfg := opts.Config
	l := cfg.Login
	if l.JWT.AccessTTL <= 0 || l.JWT.RefreshTTL <= 0 {
		return nil, errors.New("login: login.jwt.access_ttl and refresh_ttl must be positive")
	}
	priv, err := l.JWT.Ed25519Key()
	if err != nil {
		return nil, fmt.Errorf("login: login.jwt.signing_key %w", err)
	}
	aesKey, err := l.SessionKeyAES()
	if err != nil {
		return nil, fmt.Errorf("login: login.session_key_encryption_key %w", err)
	}
	seal, err := newSealer(aesKey)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rep := responder{metrics: opts.Metrics, now: now}
	st := newStore(opts.Redis, cfg.Redis.KeyPrefix)
	sg := newSigner(priv, l.JWT.Issuer, l.JWT.AccessTTL, l.JWT.RefreshTTL)
	var mp, web *flowApp
	if a := l.MiniProgram; a.AppID != "" {
		app, ok := cfg.App(a.Namespace, a.AppID)
		if !ok {
			return nil, fmt.Errorf("login: login.miniprogram: app %q is not configured in namespace %q", a.AppID, a.Namespace)
		}
		mp = &flowApp{ns: a.Namespace, appid: a.AppID, secret: app.Secret}
	}
	if w := l.Web; w.AppID != "" {
		app, ok := cfg.App(w.Namespace, w.AppID)
		if !ok {
			return nil, fmt.Errorf("login: login.web: app %q is not configured in namespace %q", w.AppID, w.Namespace)
		}
		if len(w.AllowedReturnURLs) == 0 {
			return nil, errors.New("login: login.web.allowed_return_urls is empty")
		}
		web = &flowApp{ns: w.Namespace, appid: w.AppID, secret: app.Secret}
	}
	us := &users{store: st, seal: seal, now: now, mp: mp, web: web}
	fam := &families{store: st, signer: sg, seal: seal, users: us, now: now, reuseWindow: l.JWT.RefreshReuseWindow}
	s := &Server{
		responder:     rep,
		cfg:           cfg,
		store:         st,
		signer:        sg,
		log:           opts.Logger,
		users:         us,
		families:      fam,
		callbackRate:  rate.Limit(10.0 / 60), // 10 per minute, as WeChat's own guide suggests
		callbackBurst: 10,
		auth: &authRoutes{responder: rep, families: fam, users: us, signer: sg, accessLeeway: l.JWT.AccessRefreshLeeway,
			store: st, mp: mp, log: opts.Logger},
		mini: &miniProgram{responder: rep, app: mp, wx: opts.WeChat, tokens: opts.Tokens, users: us, families: fam, log: opts.Logger},
		web: &webFlow{responder: rep, cfg: &cfg.Login.Web, app: web, wx: opts.WeChat, users: us, store: st,
			states: &states{seal: seal, store: st, now: now}, sessionTTL: l.JWT.RefreshTTL, log: opts.Logger},
	}
	s.echo = s.routes()
	return s, nil
}

// Handler returns the http.Handler serving every route of docs/LOGIN.md.
func (s *Server) Handler() http.Handler { return s.echo }

// Route templates, also used as metric labels.
const (
	routeWxLogin       = "/api/v1/auth/wx-login"
	routeRefresh       = "/api/v1/auth/refresh"
	routeLogout        = "/api/v1/auth/logout"
	routeProfile       = "/api/v1/user/profile"
	routeWxPhone       = "/api/v1/auth/wx-phone"
	routeWxDecrypt     = "/api/v1/auth/wx-decrypt"
	routeJWKS          = "/.well-known/jwks.json"
	routeLoginPage     = "/login"
	routeWebAuthorize  = "/api/v1/auth/web/authorize"
	routeWebCallback   = "/api/v1/auth/web/callback"
	routeWebLogout     = "/api/v1/auth/web/logout"
	routeLabelNotFound = "unmatched"
)

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	// X-Forwarded-For names the client only when the peer is one of
	// login.trusted_proxies: a client cannot pick its own rate-limit identity.
	e.IPExtractor = ipExtractor(&s.cfg.Login)
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe, middleware.BodyLimit("64K"))

	// Every route that is anonymous or makes the broker call WeChat is
	// limited per client IP (login.rate_limit); the callback has its own,
	// stricter limit.
	rl := s.cfg.Login.RateLimit
	e.POST(routeWxLogin, s.mini.wxLogin, s.jsonLimit(metrics.FlowMiniProgram)...)
	e.POST(routeRefresh, s.auth.refresh, s.jsonLimit(metrics.FlowRefresh)...)
	e.POST(routeLogout, s.auth.logout, s.jsonLimit(metrics.FlowLogout)...)
	e.GET(routeProfile, s.auth.profile)
	e.POST(routeWxPhone, s.mini.wxPhone, s.jsonLimit(metrics.FlowPhone)...)
	e.POST(routeWxDecrypt, s.mini.wxDecrypt)
	e.GET(routeJWKS, s.jwks)
	e.GET(routeLoginPage, s.web.loginPage)
	e.GET(routeWebAuthorize, s.web.webAuthorize, s.htmlLimit(rl.PerMinute, rl.Burst, metrics.FlowWeb)...)
	e.GET(routeWebCallback, s.web.webCallback, s.htmlLimit(int(float64(s.callbackRate)*60+0.5), s.callbackBurst, metrics.FlowWeb)...)
	e.POST(routeWebLogout, s.web.webLogout)
	return e
}

// known holds the route templates that may appear as metric labels.
var knownRoutes = map[string]bool{
	routeWxLogin: true, routeRefresh: true, routeLogout: true, routeProfile: true, routeWxPhone: true,
	routeWxDecrypt: true, routeJWKS: true, routeLoginPage: true, routeWebAuthorize: true,
	routeWebCallback: true, routeWebLogout: true,
}

// observe records the request duration by route template and status code,
// and logs each request at debug level (path only: no query, which may carry
// an OAuth code or state).
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		c.Response().Header().Set("Cache-Control", "no-store")
		c.Response().Header().Set("X-Content-Type-Options", "nosniff")
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		if !knownRoutes[route] {
			route = routeLabelNotFound
		}
		code := c.Response().Status
		s.metrics.HTTPRequestDuration.WithLabelValues(listenerLabel, route, strconv.Itoa(code)).
			Observe(time.Since(start).Seconds())
		if ce := s.log.Check(zap.DebugLevel, "login request"); ce != nil {
			ce.Write(zap.String("method", c.Request().Method), zap.String("route", route),
				zap.Int("status", code), zap.Duration("duration", time.Since(start)))
		}
		return nil
	}
}

// Login metric results beyond metrics.ResultSuccess and metrics.ResultError.
const (
	resultInvalid      = "invalid"      // malformed request
	resultUnauthorized = "unauthorized" // missing, bad, expired or revoked credential
	resultRejected     = "rejected"     // WeChat refused the code (relogin needed)
	resultReuse        = "reuse"        // a rotated refresh token was replayed: family revoked
	resultDeclined     = "declined"     // the user declined on WeChat's page
	resultStateInvalid = "state_invalid"
	resultRateLimited  = "rate_limited"
	resultReplayed     = "replayed" // the previous refresh token again, within the reuse window
)
