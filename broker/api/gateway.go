package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// The WeChat API gateway forwards every request on the internal listener
// whose path is not one of the broker's own routes to wechat.base_url, with
// the app's current access token in place of access_token, so that a
// service in any language, or any WeChat SDK whose base URL can be set, gets
// the broker's token and its retry-once on 40001 without code of its own.
//
// The forwarding itself is net/http/httputil.ReverseProxy: Rewrite builds
// the outgoing request (gatewayRewrite), a Transport (gatewayTransport, in
// gateway_transport.go) adds the fallback URLs, the errcode check and the
// one retry, ErrorHandler answers in WeChat's shape. Bodies stream both
// ways; only a request body small enough to be re-sent is also kept (up to
// gateway.retry_body_bytes, within gateway.retry_memory_bytes for all
// requests together), and only JSON answers of at most peekMax bytes are
// read before they are passed on, to find their errcode.

// appHeader names the app of a Bearer-authenticated gateway call.
const appHeader = "X-Wxbroker-App"

// eventGateway is the audit event of a gateway call.
const eventGateway = "gateway"

// Gateway refusals, in WeChat's shape.
var (
	gwNoToken      = &wxError{41001, "access_token missing: pass a token wxbroker handed out, or Authorization: Bearer <client key> with " + appHeader + ": <namespace>/<appid>", metrics.GatewayUnauthorized}
	gwBadToken     = &wxError{40001, "invalid credential, access_token is invalid or not latest: wxbroker did not hand out this token, or it has expired", metrics.GatewayUnauthorized}
	gwBadKey       = &wxError{40001, "invalid credential: unknown wxbroker client key", metrics.GatewayUnauthorized}
	gwNoApp        = &wxError{41002, "appid missing: send " + appHeader + ": <namespace>/<appid> with the Bearer client key", metrics.GatewayUnauthorized}
	gwNotAllowed   = &wxError{40001, "invalid credential: this wxbroker client key's allow-list does not include that namespace/app", metrics.GatewayForbidden}
	gwUnknownApp   = &wxError{40013, "invalid appid: not configured in that wxbroker namespace", metrics.GatewayNotFound}
	gwNoSecret     = &wxError{41004, "appsecret missing: wxbroker fills in the AppSecret for a caller with Authorization: Bearer <client key> (or secret=<client key> and appid)", metrics.GatewayUnauthorized}
	gwBadSecret    = &wxError{40125, "invalid appsecret: secret must be a wxbroker client key", metrics.GatewayUnauthorized}
	gwAdminOnly    = &wxError{48001, "api unauthorized: wxbroker forwards quota-reset calls for admin client keys only", metrics.GatewayForbidden}
	gwCredential   = &wxError{48001, "api unauthorized: wxbroker does not forward credential endpoints; it fetches credentials itself", metrics.GatewayForbidden}
	gwUserToken    = &wxError{41001, "access_token missing: " + userTokenNeeds, metrics.GatewayUnauthorized}
	gwUserTokenKey = &wxError{48001, "api unauthorized: " + userTokenNeeds, metrics.GatewayUnauthorized}
	gwBadPath      = &wxError{48001, "api unauthorized: wxbroker forwards canonical WeChat API paths only (ASCII letters, digits and / _ - . only; no . or .. segments, no //)", metrics.GatewayForbidden}
	gwTooLarge     = &wxError{45002, "content size out of limit: request body is larger than wxbroker's gateway.max_body_bytes", metrics.GatewayTooLarge}
	gwBusy         = &wxError{-1, "system busy: wxbroker gateway is at gateway.max_concurrent, retry shortly", metrics.GatewayBusy}
	gwUnavailable  = &wxError{-1, "system error: wxbroker has no valid token for this app right now, retry shortly", metrics.GatewayUnavailable}
	gwLookupFailed = &wxError{-1, "system error: wxbroker could not check this access_token right now, retry shortly", metrics.GatewayUnavailable}
	gwUnreachable  = &wxError{-1, "system error: wxbroker could not reach WeChat, retry shortly", metrics.GatewayUnreachable}
	gwTimeout      = &wxError{-1, "system error: WeChat did not answer within wxbroker's gateway.timeout", metrics.GatewayUnreachable}
	gwSlowClient   = &wxError{-1, "system error: wxbroker did not receive the whole request body within gateway.timeout: the caller sent it too slowly or broke it off", metrics.GatewayClientError}
)

// userTokenNeeds says what a /sns/ API taking a user's OAuth token needs
// through the gateway.
const userTokenNeeds = "this API takes the user's OAuth access_token (from /sns/oauth2/access_token), passed as is; " +
	"wxbroker forwards it only for a caller with Authorization: Bearer <client key> and " + appHeader + ": <namespace>/<appid>"

// Path classes. Paths are compared decoded, in lower case, after admit has
// refused every path that is not canonical (canonicalPath).
var (
	// quotaResetPaths reset an API quota: admin client keys only.
	quotaResetPaths = map[string]bool{
		"/cgi-bin/clear_quota": true, "/cgi-bin/clear_quota/v2": true, "/cgi-bin/openapi/quota/clear": true,
	}
	// credentialPaths mint credentials: never forwarded (only the leader
	// calls credential endpoints; /cgi-bin/token and stable_token are
	// answered by the broker's own routes).
	credentialPaths = map[string]bool{
		"/cgi-bin/token": true, "/cgi-bin/stable_token": true, "/cgi-bin/ticket/getticket": true,
		"/cgi-bin/component/api_component_token": true, "/cgi-bin/component/api_authorizer_token": true,
		"/cgi-bin/component/api_start_push_ticket": true, "/cgi-bin/component/clear_quota/v2": true,
		"/cgi-bin/component/api_query_auth": true,
	}
	// downloadPaths answer a file as it was uploaded (or its metadata): an
	// errcode in such an answer may be the caller's own bytes, so it is
	// never taken as WeChat's word on the token. A token WeChat really
	// refused there is passed on as is; the next other call (or a report)
	// replaces it.
	downloadPaths = map[string]bool{
		"/cgi-bin/media/get": true, "/cgi-bin/media/get/jssdk": true, "/cgi-bin/material/get_material": true,
		"/cgi-bin/media/getfeedbackmedia": true,
	}
	// secretParams names the query parameter that carries the AppSecret, for
	// the APIs that take one instead of an access token.
	secretParams = map[string]string{
		"/sns/jscode2session":      "secret",
		"/sns/oauth2/access_token": "secret",
		"/cgi-bin/clear_quota/v2":  "appsecret",
	}
)

// gatewayAPIs is the bounded set of api label values: WeChat paths common
// enough to be worth their own series. Every other path is "other".
var gatewayAPIs = []string{
	"/cgi-bin/menu/get", "/cgi-bin/menu/create", "/cgi-bin/menu/delete", "/cgi-bin/get_current_selfmenu_info",
	"/cgi-bin/message/custom/send", "/cgi-bin/message/custom/typing", "/cgi-bin/message/template/send",
	"/cgi-bin/message/subscribe/send", "/cgi-bin/message/subscribe/bizsend", "/cgi-bin/message/mass/send",
	"/cgi-bin/message/mass/sendall", "/cgi-bin/message/wxopen/template/uniform_send",
	"/cgi-bin/media/upload", "/cgi-bin/media/get", "/cgi-bin/media/uploadimg", "/cgi-bin/media/get/jssdk",
	"/cgi-bin/material/add_material", "/cgi-bin/material/get_material", "/cgi-bin/material/del_material",
	"/cgi-bin/material/batchget_material", "/cgi-bin/material/get_materialcount",
	"/cgi-bin/user/info", "/cgi-bin/user/info/batchget", "/cgi-bin/user/get", "/cgi-bin/user/info/updateremark",
	"/cgi-bin/tags/get", "/cgi-bin/tags/create", "/cgi-bin/tags/members/batchtagging",
	"/cgi-bin/qrcode/create", "/cgi-bin/shorturl", "/cgi-bin/wxaapp/createwxaqrcode",
	"/cgi-bin/customservice/getkflist", "/cgi-bin/get_api_domain_ip", "/cgi-bin/getcallbackip",
	"/cgi-bin/openapi/quota/get", "/cgi-bin/openapi/rid/get", "/cgi-bin/openapi/quota/clear",
	"/cgi-bin/clear_quota", "/cgi-bin/clear_quota/v2", "/cgi-bin/callback/check",
	"/wxa/getwxacode", "/wxa/getwxacodeunlimit", "/wxa/generatescheme", "/wxa/generate_urllink",
	"/wxa/genwxashortlink", "/wxa/msg_sec_check", "/wxa/img_sec_check", "/wxa/media_check_async",
	"/wxa/business/getuserphonenumber", "/wxa/checksession", "/wxa/getpaidunionid",
	"/wxaapi/newtmpl/gettemplate", "/wxaapi/newtmpl/addtemplate",
	"/sns/jscode2session", "/sns/oauth2/access_token", "/sns/oauth2/refresh_token", "/sns/userinfo", "/sns/auth",
	"/datacube/getweanalysisappiddailysummarytrend", "/datacube/getusersummary",
}

const apiOther = "other"

// gateway is the WeChat API gateway of an API.
type gateway struct {
	a         *API
	cfg       config.Gateway
	proxy     *httputil.ReverseProxy
	sem       chan struct{}
	retryMem  atomic.Int64                   // bytes left for re-send buffers
	durations map[string]prometheus.Observer // api label → histogram child

	countersMu sync.RWMutex
	counters   map[requestLabels]prometheus.Counter // children of Gateway.Requests
}

// requestLabels are the labels of one wxbroker_gateway_requests_total child.
type requestLabels struct{ ns, appid, api, result, errcode string }

// counter returns the child for l, created once: WithLabelValues hashes
// five labels on every call.
func (g *gateway) counter(l requestLabels) prometheus.Counter {
	g.countersMu.RLock()
	ctr, ok := g.counters[l]
	g.countersMu.RUnlock()
	if ok {
		return ctr
	}
	ctr = g.a.m.Gateway.Requests.WithLabelValues(l.ns, l.appid, l.api, l.result, l.errcode)
	g.countersMu.Lock()
	g.counters[l] = ctr
	g.countersMu.Unlock()
	return ctr
}

// newGateway builds the gateway of a. bases are wechat.base_url and the
// fallback URLs, parsed.
func newGateway(a *API, cfg config.Gateway, bases []*url.URL) *gateway {
	g := &gateway{
		a:         a,
		cfg:       cfg,
		sem:       make(chan struct{}, cfg.MaxConcurrent),
		durations: map[string]prometheus.Observer{},
		counters:  map[requestLabels]prometheus.Counter{},
	}
	g.retryMem.Store(cfg.RetryMemoryBytes)
	for _, p := range append(gatewayAPIs, apiOther) {
		g.durations[p] = a.m.Gateway.Duration.WithLabelValues(p)
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:        g.rewrite,
		Transport:      newGatewayTransport(g, bases),
		ModifyResponse: g.modifyResponse,
		ErrorHandler:   g.errorHandler,
		ErrorLog:       zap.NewStdLog(a.log.Named("gateway")),
		BufferPool:     copyBuffers{},
	}
	return g
}

// gwCall is one gateway request, as the Rewrite, Transport and handlers see
// it. Fields set before forwarding are read-only afterwards; the outcome
// fields are written by the goroutine serving the request only.
type gwCall struct {
	api       string
	ns, appid string // for an Open Platform call, appid is the component's
	cl        *client
	// op is an Open Platform call (gateway_platform.go): authorizer names
	// the account whose token is injected, or is empty for a component
	// call (the component_access_token). param is the query parameter
	// the token goes in; empty: access_token.
	op         bool
	authorizer string
	param      string
	token      string // the access token injected; empty for AppSecret APIs
	secret     string // the AppSecret filled in; empty otherwise
	secretKey  string // its query parameter
	user       bool   // a /sns/ API taking the user's own token: passed as is
	download   bool   // downloadPaths: the answer's errcode is never a token failure
	body       *replayBody
	query      url.Values // the caller's query, parsed once

	errcode int    // the errcode WeChat answered (0: none, or not JSON)
	result  string // metrics result label
	retry   string // retries result label; empty: no retry was due
	sent    string // the token of the last attempt (audit)
}

type callKey struct{}

func callFrom(ctx context.Context) *gwCall {
	c, _ := ctx.Value(callKey{}).(*gwCall)
	return c
}

// apiLabel maps a path to its api label.
func (g *gateway) apiLabel(p string) string {
	if _, ok := g.durations[p]; ok && p != apiOther {
		return p
	}
	return apiOther
}

// ServeHTTP forwards one request, or refuses it in WeChat's shape.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	deadline := start.Add(g.cfg.Timeout)
	// The listener's ReadTimeout and WriteTimeout are fixed for the
	// broker's own routes and counted from when the request arrived: a
	// gateway call may take gateway.timeout (upload included), and its -1
	// answer must still be written after that. Not every ResponseWriter
	// (a test recorder) has deadlines; there is nothing to extend then.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(deadline.Add(config.GatewayAnswerTime))
	_ = rc.SetWriteDeadline(deadline.Add(config.GatewayAnswerTime))
	p, canonical := canonicalPath(r.URL.Path)
	c := &gwCall{api: g.apiLabel(p), ns: unknownNamespace, appid: unknownApp}
	defer func() { g.finish(r, c, start) }()

	select {
	case g.sem <- struct{}{}:
		defer func() { <-g.sem }()
	default:
		g.refuse(w, c, gwBusy)
		return
	}
	if !canonical {
		g.refuse(w, c, gwBadPath)
		return
	}
	if werr := g.admit(r, p, c); werr != nil {
		g.refuse(w, c, werr)
		return
	}
	if r.ContentLength > g.cfg.MaxBodyBytes {
		g.refuse(w, c, gwTooLarge)
		return
	}
	if c.op && c.token == "" && c.secret == "" && !c.user {
		if werr := g.platformToken(c); werr != nil {
			g.refuse(w, c, werr)
			return
		}
	}
	if c.token == "" && c.secret == "" && !c.user {
		tok, err := g.a.tokens.AccessToken(c.ns, c.appid)
		if err != nil {
			werr := gwUnavailable
			if errors.Is(err, broker.ErrUnknownApp) {
				werr = gwUnknownApp
			}
			g.refuse(w, c, werr)
			return
		}
		c.token = tok.AccessToken
		if ai := g.a.view.Load().apps[appKey{c.ns, c.appid}]; ai != nil {
			ai.memoFor(tok)
		}
	}
	ctx, cancel := context.WithDeadline(context.WithValue(r.Context(), callKey{}, c), deadline)
	defer cancel()
	out := r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		c.body = g.newReplayBody(w, r)
		defer c.body.release()
		out.Body = c.body
		// The transport gives up on a call only once its body write ends: a
		// caller that stopped sending would hold the answer until the read
		// deadline, past which it cannot be written.
		stop := context.AfterFunc(ctx, func() {
			if c.body.waiting() {
				_ = rc.SetReadDeadline(time.Now())
			}
		})
		defer stop()
	}
	g.proxy.ServeHTTP(w, out)
}

// canonicalPath returns the path the path classes are matched on: the
// request's decoded path (net/http has undone %XX; the same decoded path is
// what the gateway sends on) in lower case. ok is false for a path that no
// WeChat API has and a front server might read differently from the
// gateway: a byte other than an ASCII letter, digit, '/', '_', '-' or '.'
// (so no ';' parameter, whitespace, control character, '%' left after
// decoding, '\\', '?' or '#'), a . or .. segment, an empty segment, or a
// trailing slash.
func canonicalPath(decoded string) (p string, ok bool) {
	p = strings.ToLower(decoded)
	for i := 0; i < len(p); i++ {
		switch ch := p[i]; {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '/', ch == '_', ch == '-', ch == '.':
		default:
			return p, false
		}
	}
	return p, p == path.Clean(p) && !strings.Contains(p, "//")
}

// admit finds who calls and for which app, and applies the path rules to
// p, the canonical path.
func (g *gateway) admit(r *http.Request, p string, c *gwCall) *wxError {
	if credentialPaths[p] {
		return gwCredential
	}
	c.download = downloadPaths[p]
	q := r.URL.Query()
	c.query = q
	secretKey := secretParams[p]
	if key := bearer(r.Header.Get("Authorization")); key != "" {
		cl := g.a.view.Load().keys.lookup(key)
		if cl == nil {
			return gwBadKey
		}
		c.cl = cl
		ns, appid, ok := strings.Cut(r.Header.Get(appHeader), "/")
		if !ok || ns == "" || appid == "" {
			return gwNoApp
		}
		if handled, err := g.usePlatform(c, p, ns, appid); handled {
			if err != nil {
				return err
			}
		} else if err := g.useApp(c, ns, appid); err != nil {
			return err
		}
	} else if secretKey != "" {
		// A WeChat SDK pointed at the broker sends its configured secret:
		// the client key, as on /cgi-bin/token.
		key, appid := q.Get(secretKey), q.Get("appid")
		if key == "" {
			return gwNoSecret
		}
		cl := g.a.view.Load().keys.lookup(key)
		if cl == nil {
			return gwBadSecret
		}
		c.cl = cl
		ns := r.Header.Get(namespaceHeader)
		if ns == "" {
			ns = cl.onlyNS
		}
		if ns == "" {
			ns = g.a.view.Load().nsOfApp[appid]
		}
		if err := g.useApp(c, ns, appid); err != nil {
			return err
		}
	} else if strings.HasPrefix(p, "/sns/") {
		if q.Get("access_token") != "" {
			return gwUserTokenKey
		}
		return gwUserToken
	} else if g.platformTokenCaller(c, q) {
		// A component or authorizer token the broker handed out.
	} else {
		tok := q.Get("access_token")
		if tok == "" {
			return gwNoToken
		}
		ns, appid, ok, err := g.a.tokens.IssuedTokenApp(r.Context(), tok)
		if err != nil {
			g.a.log.Warn("gateway cannot check an access token", zap.Error(err))
			return gwLookupFailed
		}
		if !ok {
			return gwBadToken
		}
		c.ns, c.appid = ns, appid
	}
	if quotaResetPaths[p] && (c.cl == nil || !c.cl.admin) {
		return gwAdminOnly
	}
	switch {
	case secretKey != "":
		c.secretKey = secretKey
		c.secret = g.a.view.Load().secrets[appKey{c.ns, c.appid}]
		if c.secret == "" {
			return gwUnknownApp
		}
	case strings.HasPrefix(p, "/sns/"):
		c.user = true
	}
	return nil
}

// reportFailure reports the token WeChat refused on c (the injected one)
// and returns the token to re-send with, or the retries label of why the
// call is not re-sent. The report is checked with WeChat like one on the
// invalidate route: a caller with clients[].invalidate is trusted when the
// check cannot decide, any other caller (no permission, or a token instead
// of a client key) only when the check confirms the token failed. The
// caller's report budget pays for a report that costs WeChat a call.
func (g *gateway) reportFailure(ctx context.Context, c *gwCall) (broker.Token, string) {
	r := broker.Report{Token: c.token, Source: metrics.SourceProxy, Proof: broker.MustConfirm}
	switch {
	case c.cl != nil:
		if c.cl.invalidate {
			r.Proof = broker.Unproven
		}
		r.Charge = chargeTo(c.cl.reports)
	case c.op:
		r.Charge = chargeTo(g.a.op.reportLimiter(c.ns, c.appid))
	default:
		ai := g.a.view.Load().apps[appKey{c.ns, c.appid}]
		if ai == nil {
			return broker.Token{}, metrics.RetryNoToken
		}
		r.Charge = chargeTo(ai.reports)
	}
	var tok broker.Token
	var err error
	if c.op {
		tok, err = g.reportPlatform(ctx, c, r)
	} else {
		tok, err = g.a.tokens.ReportFailure(ctx, c.ns, c.appid, r)
	}
	switch {
	case errors.Is(err, errReportLimit):
		return tok, metrics.RetryRefused
	case errors.Is(err, broker.ErrForceLimited):
		return tok, metrics.RetryLimited
	case errors.Is(err, broker.ErrNotConfirmed):
		return tok, metrics.RetryNotConfirmed
	case err != nil:
		return tok, metrics.RetryNoToken
	case tok.AccessToken == c.token:
		// WeChat still accepts the token: its 40001 was not about it.
		return tok, metrics.RetryNotConfirmed
	}
	return tok, ""
}

// useApp checks the client's allow-list (before anything about the app is
// revealed) and that the app is configured.
func (g *gateway) useApp(c *gwCall, ns, appid string) *wxError {
	if !c.cl.allows(ns, appid) {
		return gwNotAllowed
	}
	if _, ok := g.a.view.Load().apps[appKey{ns, appid}]; !ok {
		return gwUnknownApp
	}
	c.ns, c.appid = ns, appid
	return nil
}

// rewrite builds the request sent to WeChat: same method, path (under
// base_url's prefix), query and body; the app's token (or AppSecret) in
// place of the caller's; no credential or wxbroker header of the caller.
func (g *gateway) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	out := pr.Out
	q := c.query
	switch {
	case c.secret != "":
		q.Set(c.secretKey, c.secret)
		q.Set("appid", c.appid)
		q.Del("access_token")
	case c.token != "":
		q.Set(c.tokenParam(), c.token)
	}
	out.URL.RawQuery = q.Encode()
	out.URL.Path = pr.In.URL.Path
	out.URL.RawPath = ""
	out.Host = ""
	h := out.Header
	h.Del("Authorization")
	h.Del("Cookie")
	h.Del("Accept-Encoding") // answers arrive as sent, so errcodes can be read
	for k := range h {
		if strings.HasPrefix(k, "X-Wxbroker-") {
			delete(h, k)
		}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default user agent
	}
}

// modifyResponse drops cookies WeChat might set: they are not the caller's.
func (g *gateway) modifyResponse(resp *http.Response) error {
	resp.Header.Del("Set-Cookie")
	return nil
}

// errorHandler answers a request WeChat did not answer: -1 in WeChat's shape.
func (g *gateway) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	werr := gwUnreachable
	var mbe *http.MaxBytesError
	slow := c.body != nil && c.body.callerFault()
	switch {
	case errors.As(err, &mbe) || c.body != nil && c.body.tooLarge():
		werr = gwTooLarge
	case errors.Is(err, context.Canceled):
		// The caller went away: nobody reads the answer.
		c.result = metrics.GatewayUnreachable
		if slow {
			c.result = metrics.GatewayClientError
		}
		c.errcode = -1
		return
	case slow:
		werr = gwSlowClient
	case errors.Is(err, context.DeadlineExceeded):
		werr = gwTimeout
	}
	fields := []zap.Field{zap.String("namespace", c.ns), zap.String("appid", c.appid), zap.String("api", c.api), zap.Error(scrubError(err, c))}
	switch werr {
	case gwSlowClient:
		g.a.log.Info("gateway: caller did not send its request body in time", fields...)
	case gwTooLarge:
	default:
		g.a.log.Warn("gateway: wechat did not answer", fields...)
	}
	g.refuse(w, c, werr)
}

// refuse answers e in WeChat's shape and notes it as the call's outcome.
func (g *gateway) refuse(w http.ResponseWriter, c *gwCall, e *wxError) {
	c.result = e.result
	c.errcode = e.code
	buf := getBuf()
	defer putBuf(buf)
	b := appendWeChatError(*buf, e)
	*buf = b
	h := w.Header()
	h["Content-Type"] = headerJSON
	h["Cache-Control"] = headerNoStore
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// finish records the call's metrics and audit line.
func (g *gateway) finish(r *http.Request, c *gwCall, start time.Time) {
	if c.result == "" {
		c.result = metrics.GatewayOK
		if c.errcode != 0 {
			c.result = metrics.GatewayWeChatError
		}
	}
	g.durations[c.api].Observe(time.Since(start).Seconds())
	g.counter(requestLabels{c.ns, c.appid, c.api, c.result, metrics.ErrcodeLabel(c.errcode)}).Inc()
	if c.retry != "" {
		g.a.m.Gateway.Retries.WithLabelValues(c.ns, c.appid, c.retry).Inc()
	}
	name := ""
	if c.cl != nil {
		name = c.cl.name
	}
	ref := c.sent
	if ref == "" {
		ref = c.token
	}
	id := c.appid
	if c.authorizer != "" {
		id += "/" + c.authorizer
	}
	g.a.audit.line(time.Now(), eventGateway, name, c.ns, id, c.result, g.tokenRef(c, ref), r.RemoteAddr)
}

// tokenRef is the audit reference of tok, from the app's memo when tok is
// its current token (no hashing per request).
func (g *gateway) tokenRef(c *gwCall, tok string) string {
	if ai := g.a.view.Load().apps[appKey{c.ns, c.appid}]; ai != nil {
		if m := ai.memo.Load(); m != nil && m.token == tok {
			return m.ref
		}
	}
	return tokenRef(tok)
}

// scrubError hides the call's credentials in err's text.
func scrubError(err error, c *gwCall) error {
	msg := err.Error()
	clean := msg
	for _, s := range []string{c.secret, c.token, c.sent} {
		if len(s) >= 4 {
			clean = strings.ReplaceAll(clean, s, "REDACTED")
		}
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}

// copyBuffers is the ReverseProxy's pool of copy buffers.
type copyBuffers struct{}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte  { return *copyBufPool.Get().(*[]byte) }
func (copyBuffers) Put(b []byte) { copyBufPool.Put(&b) }
