package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// Limits of the internal listener. MaxHeaderBytes is meant for
// http.Server.MaxHeaderBytes (Server sets it); MaxBodyBytes bounds every
// request body (413 beyond it).
const (
	MaxHeaderBytes = 16 << 10
	MaxBodyBytes   = 64 << 10
)

// invalidateTimeout bounds how long an invalidation waits for the refreshed
// token when the caller's own context has no earlier deadline.
const invalidateTimeout = 10 * time.Second

// namespaceHeader names the namespace on the WeChat-compatible /cgi-bin/token.
const namespaceHeader = "X-Wxbroker-Namespace"

// TokenSource is what the API needs from the broker; *broker.Broker
// satisfies it. Implementations must be safe for concurrent use.
type TokenSource interface {
	AccessToken(ns, appid string) (broker.Token, error)
	Ticket(ns, appid, typ string) (broker.Ticket, error)
	ReportFailure(ctx context.Context, ns, appid string, r broker.Report) (broker.Token, error)
	AppByToken(accessToken string) (ns, appid string, ok bool)
	IssuedTokenApp(ctx context.Context, accessToken string) (ns, appid string, ok bool, err error)
	Status(ctx context.Context) broker.Status
	Ready() error
}

var _ TokenSource = (*broker.Broker)(nil)

// Options configures an API. Tokens, Config, Logger and Metrics are required.
type Options struct {
	Tokens  TokenSource
	Config  *config.Config // validated; clients, namespaces and log format are read
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// AuditLogger receives one line per credential read or invalidation. Nil:
	// the API builds its own, encoded like zap's encoder for
	// Config.Log.Format would, buffered (written out at least every second
	// and by Close) and written to AuditWriter. A logger passed here should
	// be buffered too.
	AuditLogger *zap.Logger
	// AuditWriter is where the default audit logger writes; nil: os.Stderr.
	AuditWriter io.Writer
	// Gatherer is served on /metrics; nil: no /metrics route.
	Gatherer prometheus.Gatherer
	// Now is the clock for expires_in and JS-SDK timestamps; nil: time.Now.
	Now func() time.Time
	// Admin serves POST /v1/admin/reload and the resume route; nil: they
	// answer 404.
	Admin Admin
}

// API is the internal HTTP API. Its handler is safe for concurrent use. It
// owns the listener's plumbing (middleware, errors, the current view of the
// configuration) and registers the route groups, each its own small type
// holding what its routes need: tokenRoutes (tokens.go), compatRoutes
// (compat.go, stable.go), adminRoutes (admin.go) and probes (readyz.go),
// all sharing one desk (desk.go).
type API struct {
	tokens TokenSource
	log    *zap.Logger
	audit  auditor
	stop   func() error
	m      *metrics.Metrics
	view   atomic.Pointer[view] // clients and apps; Reload swaps it
	routes map[string]bool
	// observers holds, per route template (and "unmatched"), the
	// wxbroker_http_request_duration_seconds children by status code.
	observers map[string]*routeObservers
	echo      *echo.Echo
	gw        *gateway     // nil when gateway.enabled is false
	handler   http.Handler // echo, behind the gateway's dispatch when enabled
	stopOnce  sync.Once
	stopErr   error

	// The route groups (newEcho registers them).
	reads  *tokenRoutes
	compat *compatRoutes
	admin  *adminRoutes
	probes *probes
}

// addFunc registers one route of a route group.
type addFunc func(method, path string, h echo.HandlerFunc)

// unknownNamespace and unknownApp label requests naming a namespace or an
// app that is not configured: a label value must never come from the request.
const (
	unknownNamespace = "unknown"
	unknownApp       = "unknown"
)

// New builds the API and compiles the client keys and allow patterns. It
// returns an error naming the missing option or the bad client entry.
func New(opts Options) (*API, error) {
	switch {
	case opts.Tokens == nil:
		return nil, errors.New("api: Options.Tokens is required")
	case opts.Config == nil:
		return nil, errors.New("api: Options.Config is required")
	case opts.Logger == nil:
		return nil, errors.New("api: Options.Logger is required")
	case opts.Metrics == nil:
		return nil, errors.New("api: Options.Metrics is required")
	}
	v, err := newView(opts.Config, opts.Metrics, nil)
	if err != nil {
		return nil, err
	}
	a := &API{
		tokens: opts.Tokens,
		log:    opts.Logger,
		audit:  auditor{zap: opts.AuditLogger},
		m:      opts.Metrics,
		routes: map[string]bool{},
		observers: map[string]*routeObservers{
			routeUnmatched: {},
		},
	}
	a.view.Store(v)
	if a.audit.zap == nil {
		w := opts.AuditWriter
		if w == nil {
			w = os.Stderr
		}
		a.audit.log = newAuditLog(w, opts.Config.Log.Format)
		a.stop = a.audit.log.stop
	}
	now, realClock := opts.Now, false
	if now == nil {
		now, realClock = time.Now, true
	}
	d := &desk{view: &a.view, m: a.m, audit: a.audit}
	a.reads = &tokenRoutes{desk: d, tokens: opts.Tokens, now: now, realClock: realClock}
	a.compat = &compatRoutes{desk: d, tokens: opts.Tokens, handouts: newHandouts(maxHandouts), log: opts.Logger, now: now}
	a.admin = &adminRoutes{desk: d, status: opts.Tokens.Status, adm: opts.Admin, log: opts.Logger}
	a.probes = &probes{ready: opts.Tokens.Ready, gatherer: opts.Gatherer, log: opts.Logger}
	a.echo = a.newEcho()
	a.handler = a.echo
	if opts.Config.Gateway.Enabled {
		bases, err := gatewayBases(opts.Config)
		if err != nil {
			return nil, err
		}
		a.gw = newGateway(a, opts.Config.Gateway, bases)
		a.handler = http.HandlerFunc(a.dispatch)
	}
	return a, nil
}

// Handler returns the API's http.Handler.
func (a *API) Handler() http.Handler { return a.handler }

// dispatch sends the broker's own routes to echo and everything else to the
// WeChat API gateway. /v1/ is the broker's own: an unknown /v1/ path is a
// 404 in the broker's shape, never forwarded.
func (a *API) dispatch(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if strings.HasPrefix(p, "/v1/") || a.routes[p] {
		a.echo.ServeHTTP(w, r)
		return
	}
	a.gw.ServeHTTP(w, r)
}

// gatewayBases parses wechat.base_url and wechat.fallback_urls.
func gatewayBases(cfg *config.Config) ([]*url.URL, error) {
	var bases []*url.URL
	for i, raw := range append([]string{cfg.WeChat.BaseURL}, cfg.WeChat.FallbackURLs...) {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("api: gateway: WeChat URL %d is not an absolute http(s) URL", i)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		u.RawPath, u.RawQuery, u.Fragment = "", "", ""
		bases = append(bases, u)
	}
	return bases, nil
}

// Server returns an http.Server for addr serving Handler with the API's
// limits (MaxHeaderBytes, read and idle timeouts) and net/http's own error
// log routed to the API's logger.
func (a *API) Server(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(a.log.Named("http")),
	}
}

// Close flushes and stops the default audit logger. Call it after the HTTP
// server has shut down; a caller-supplied AuditLogger is left alone. It is
// safe to call more than once.
func (a *API) Close() error {
	a.stopOnce.Do(func() {
		if a.stop != nil {
			a.stopErr = a.stop()
		}
	})
	if a.stopErr != nil {
		return fmt.Errorf("api: flush audit log: %w", a.stopErr)
	}
	return nil
}

func (a *API) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Logger.SetOutput(io.Discard)
	e.HTTPErrorHandler = a.handleError
	e.Use(a.middleware)

	add := func(method, path string, h echo.HandlerFunc) {
		e.Add(method, path, h)
		a.routes[path] = true
		a.observers[path] = &routeObservers{}
	}
	// One line per route group.
	a.reads.routes(add)
	a.admin.routes(add)
	a.compat.routes(add)
	a.probes.routes(add)
	return e
}

// middleware wraps every route (and echo's not-found and method-not-allowed
// handlers) in one closure: instrument, recover, limit the body. Echo builds
// the chain anew for each request, so one closure instead of three saves two
// allocations per read.
func (a *API) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := a.guard(c, next)
		a.observe(c, start, err)
		return err
	}
}

// observe records wxbroker_http_request_duration_seconds with the route
// template (never the raw path) and the status the caller will see.
func (a *API) observe(c echo.Context, start time.Time, err error) {
	code := c.Response().Status
	if err != nil {
		code = classify(err).status
	}
	route := c.Path()
	ro := a.observers[route]
	if ro == nil {
		route, ro = routeUnmatched, a.observers[routeUnmatched]
	}
	ro.observer(a.m, route, code).Observe(time.Since(start).Seconds())
}

// routeUnmatched is the route label of requests that matched no route.
const routeUnmatched = "unmatched"

// routeObservers caches one route's histogram children: the one for 200
// apart, so that a successful read looks it up without hashing; the others
// by status code.
type routeObservers struct {
	ok     atomic.Pointer[prometheus.Observer]
	byCode sync.Map // int → prometheus.Observer
}

// observer returns the histogram child of route and code, creating it on
// first use.
func (ro *routeObservers) observer(m *metrics.Metrics, route string, code int) prometheus.Observer {
	if code == http.StatusOK {
		if o := ro.ok.Load(); o != nil {
			return *o
		}
		o := m.HTTPRequestDuration.WithLabelValues("internal", route, "200")
		ro.ok.Store(&o)
		return o
	}
	if o, ok := ro.byCode.Load(code); ok {
		return o.(prometheus.Observer)
	}
	o, _ := ro.byCode.LoadOrStore(code, m.HTTPRequestDuration.WithLabelValues("internal", route, strconv.Itoa(code)))
	return o.(prometheus.Observer)
}

// guard runs next, turning a panic into a 500 without internals (keeping
// http.ErrAbortHandler's meaning), after refusing a declared oversize body and
// capping what is read of any body.
func (a *API) guard(c echo.Context, next echo.HandlerFunc) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if r == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, compared as net/http does
				panic(r)
			}
			err = fmt.Errorf("panic in handler: %v", r)
		}
	}()
	r := c.Request()
	if r.ContentLength > MaxBodyBytes {
		return errTooLarge
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(c.Response(), r.Body, MaxBodyBytes)
	}
	return next(c)
}
