package wechattest

import (
	"bytes"
	"encoding/json"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// API names, equal to the wechat.API* constants. They name the simulator's
// stats and fault queues; wechattest keeps its own copies so that it does not
// depend on package wechat.
const (
	apiToken             = "token"
	apiStableToken       = "stable_token"
	apiGetTicket         = "getticket"
	apiJSCode2Session    = "jscode2session"
	apiCheckSession      = "checksession"
	apiPhoneNumber       = "getuserphonenumber"
	apiOAuthAccessToken  = "oauth2_access_token"
	apiOAuthRefreshToken = "oauth2_refresh_token"
	apiUserInfo          = "userinfo"
	apiOAuthCheck        = "sns_auth"
	apiComponentToken    = "api_component_token"
	apiAuthorizerToken   = "api_authorizer_token"
	apiClearQuota        = "clear_quota"
	apiQuotaGet          = "quota_get"
	apiRidGet            = "rid_get"
	apiGeneric           = "generic"
)

// maxBody bounds the request bodies the simulator reads, except media
// uploads (maxMediaBody); a larger body is answered 45002.
const maxBody = 1 << 20

// Options configures a Sim. The zero value is usable: every zero (or
// negative) field takes the default named in its comment.
type Options struct {
	// Now is the simulator's clock. Nil means time.Now (real-time mode);
	// tests inject a controllable clock so that lifetimes pass without
	// sleeping. It is called with the simulator's lock held and must not call
	// back into the Sim.
	Now func() time.Time
	// TokenTTL is the lifetime of classic, stable, component, authorizer and
	// user OAuth access tokens. Default 7200s.
	TokenTTL time.Duration
	// Overlap is how long the previous classic token stays valid after a new
	// fetch. Default 300s.
	Overlap time.Duration
	// RotationWindow is the last part of a stable token's life in which a
	// normal-mode call mints its successor. Default 300s.
	RotationWindow time.Duration
	// ForceMinInterval is the minimum gap between forced stable refreshes;
	// a closer force is ignored and returns the current token. Default 30s.
	ForceMinInterval time.Duration
	// ForceDailyLimit is the number of forced stable refreshes per app per
	// UTC+8 day; more answer 45009. Default 20.
	ForceDailyLimit int
	// DailyQuota is the number of calls per app per credential API
	// (token, stable_token, getticket, component tokens) per UTC+8 day;
	// more answer 45009. SetQuota overrides it per app and API. Default 2000.
	DailyQuota int
	// CodeTTL is the lifetime of mini-program login codes and phone codes;
	// web OAuth codes live twice as long (10m by default). Default 5m.
	CodeTTL time.Duration
	// TicketTTL is the lifetime announced for JS-SDK tickets. Default 7200s.
	TicketTTL time.Duration
	// VerifyTicketTTL is how long a component_verify_ticket is accepted by
	// api_component_token (Sim clock). Default 12h, as at WeChat.
	VerifyTicketTTL time.Duration
	// TicketPushInterval is how often RunPushes pushes a new verify ticket
	// to each component's event URL, in real time. Default 10m, as at
	// WeChat; tests shorten it.
	TicketPushInterval time.Duration
	// PushClient sends the pushes to event URLs. Nil: a client with a 5s
	// timeout that does not follow redirects.
	PushClient *http.Client
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.TokenTTL, 7200*time.Second)
	def(&o.Overlap, 300*time.Second)
	def(&o.RotationWindow, 300*time.Second)
	def(&o.ForceMinInterval, 30*time.Second)
	def(&o.CodeTTL, 5*time.Minute)
	def(&o.TicketTTL, 7200*time.Second)
	def(&o.VerifyTicketTTL, 12*time.Hour)
	def(&o.TicketPushInterval, 10*time.Minute)
	if o.PushClient == nil {
		o.PushClient = &http.Client{
			Timeout:       pushTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if o.ForceDailyLimit <= 0 {
		o.ForceDailyLimit = 20
	}
	if o.DailyQuota <= 0 {
		o.DailyQuota = 2000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Sim is a simulated WeChat API server. Create it with New; the zero value is
// not usable. A Sim is an http.Handler and is safe for concurrent use.
type Sim struct {
	opts     Options
	qrPage   *template.Template
	authPage *template.Template

	// mu guards everything below. It is never held while a latency fault
	// sleeps or while a response is written.
	mu         sync.Mutex
	apps       map[string]*app
	tokens     map[string]*token     // app-level access tokens of every kind
	userTokens map[string]*userToken // web OAuth access tokens
	refreshes  map[string]*refresh   // web OAuth refresh tokens
	codes      map[string]*code      // login, risky, phone and OAuth codes
	sessions   map[string]string     // appid + "\x00" + openid → session_key
	profiles   map[string]profile    // person → profile
	faults     map[string][]*faultEntry
	rids       map[string]*ridRecord
	ridOrder   []string
	mints      int            // mints since the last sweep of dead tokens and codes
	media      mediaStore     // apis.go
	comps      componentState // component.go
	st         stats
}

// New returns a Sim configured by opts. It knows no apps until AddApp.
func New(opts Options) *Sim {
	s := &Sim{
		opts:       opts.withDefaults(),
		apps:       make(map[string]*app),
		tokens:     make(map[string]*token),
		userTokens: make(map[string]*userToken),
		refreshes:  make(map[string]*refresh),
		codes:      make(map[string]*code),
		sessions:   make(map[string]string),
		profiles:   make(map[string]profile),
		faults:     make(map[string][]*faultEntry),
		rids:       make(map[string]*ridRecord),
		qrPage:     template.Must(template.New("qrconnect").Parse(qrPageHTML)),
		authPage:   template.Must(template.New("componentloginpage").Parse(authPageHTML)),
		comps:      newComponentState(),
	}
	s.st.reset()
	return s
}

func (s *Sim) now() time.Time { return s.opts.Now() }

// route is one WeChat endpoint.
type route struct {
	api    string
	method string // "" accepts any method
	handle func(s *Sim, c *call) []byte
}

var _ http.Handler = (*Sim)(nil)

func (s *Sim) route(path string) (route, bool) {
	switch path {
	case "/cgi-bin/token":
		return route{apiToken, http.MethodGet, (*Sim).classicToken}, true
	case "/cgi-bin/stable_token":
		return route{apiStableToken, http.MethodPost, (*Sim).stableToken}, true
	case "/cgi-bin/ticket/getticket":
		return route{apiGetTicket, http.MethodGet, (*Sim).getTicket}, true
	case "/sns/jscode2session":
		return route{apiJSCode2Session, http.MethodGet, (*Sim).jscode2session}, true
	case "/wxa/checksession":
		return route{apiCheckSession, http.MethodGet, (*Sim).checkSession}, true
	case "/wxa/business/getuserphonenumber":
		return route{apiPhoneNumber, http.MethodPost, (*Sim).phoneNumber}, true
	case "/sns/oauth2/access_token":
		return route{apiOAuthAccessToken, http.MethodGet, (*Sim).oauthAccessToken}, true
	case "/sns/oauth2/refresh_token":
		return route{apiOAuthRefreshToken, http.MethodGet, (*Sim).oauthRefreshToken}, true
	case "/sns/userinfo":
		return route{apiUserInfo, http.MethodGet, (*Sim).userInfo}, true
	case "/sns/auth":
		return route{apiOAuthCheck, http.MethodGet, (*Sim).oauthCheck}, true
	case "/cgi-bin/component/api_component_token":
		return route{apiComponentToken, http.MethodPost, (*Sim).componentToken}, true
	case "/cgi-bin/component/api_authorizer_token":
		return route{apiAuthorizerToken, http.MethodPost, (*Sim).authorizerToken}, true
	case "/cgi-bin/clear_quota/v2":
		return route{apiClearQuota, http.MethodPost, (*Sim).clearQuota}, true
	case "/cgi-bin/openapi/quota/get":
		return route{apiQuotaGet, http.MethodPost, (*Sim).quotaGet}, true
	case "/cgi-bin/openapi/rid/get":
		return route{apiRidGet, http.MethodPost, (*Sim).ridGet}, true
	}
	if rt, ok := extraRoute(path); ok {
		return rt, true
	}
	for _, p := range []string{"/cgi-bin/", "/wxa/", "/sns/"} {
		if strings.HasPrefix(path, p) && len(path) > len(p) {
			return route{apiGeneric, "", (*Sim).generic}, true
		}
	}
	return route{}, false
}

// ServeHTTP answers WeChat's API paths, the qrconnect page and the /sim/
// control endpoints. Unknown paths answer 404.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/sim/"):
		s.serveControl(w, r)
		return
	case r.URL.Path == "/connect/qrconnect":
		s.serveQRConnect(w, r)
		return
	case r.URL.Path == "/connect/qrconnect/confirm":
		s.serveQRConfirm(w, r)
		return
	case r.URL.Path == "/cgi-bin/componentloginpage":
		s.serveAuthPage(w, r)
		return
	case r.URL.Path == "/cgi-bin/componentloginpage/confirm":
		s.serveAuthConfirm(w, r)
		return
	}
	rt, ok := s.route(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	c := newCall(rt.api, r)

	s.mu.Lock()
	c.appID = s.appIDOf(c)
	s.st.call(c.api, c.appID)
	f, faulted := s.takeFault(c.api)
	s.mu.Unlock()

	if !faulted {
		writeAnswer(w, c, s.process(rt, c))
		return
	}
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case f.Drop:
		dropConnection(w)
	case f.Status != 0:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, "<html>\r\n<head><title>"+http.StatusText(f.Status)+"</title></head>\r\n"+
			"<body>\r\n<center><h1>"+http.StatusText(f.Status)+"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
	case f.InvalidJSON:
		w.Header().Set("Content-Type", "application/json; encoding=utf-8")
		_, _ = io.WriteString(w, `{"errcode":0,"access_token":"`)
	case f.Errcode != 0:
		s.mu.Lock()
		body := s.errBody(c, f.Errcode, "")
		s.mu.Unlock()
		writeJSON(w, body)
	case f.DropResponse:
		s.process(rt, c)
		dropConnection(w)
	default:
		writeAnswer(w, c, s.process(rt, c))
	}
}

// process runs a route's handler under the lock and returns the JSON body.
func (s *Sim) process(rt route, c *call) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.bodyErr != nil {
		return s.errBody(c, -1, "")
	}
	if c.tooLarge && c.api != apiMediaUpload { // media/upload answers per type
		return s.errBody(c, 45002, "")
	}
	if rt.method != "" && c.r.Method != rt.method {
		if rt.method == http.MethodPost {
			return s.errBody(c, 43002, "")
		}
		return s.errBody(c, 43001, "")
	}
	return rt.handle(s, c)
}

// writeAnswer writes a handler's answer: JSON, or the binary content type
// the handler set (media download, mini-program code).
func writeAnswer(w http.ResponseWriter, c *call, body []byte) {
	if c.contentType == "" {
		writeJSON(w, body)
		return
	}
	w.Header().Set("Content-Type", c.contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, body []byte) {
	// The Content-Type WeChat really sends.
	w.Header().Set("Content-Type", "application/json; encoding=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// dropConnection closes the client connection without answering. Through a
// wrapper that cannot hijack it aborts the handler, which makes net/http
// close the connection as well.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// call is one request to a WeChat endpoint, read once.
type call struct {
	api     string
	r       *http.Request
	query   url.Values
	body    []byte
	bodyErr error
	// tooLarge: the body was longer than the API's limit (bodyLimit); body
	// holds its first bytes only.
	tooLarge bool
	fields   map[string]any // the JSON body, when it is a JSON object
	jsonOK   bool           // the body parsed as a JSON object
	ip       netip.Addr
	appID    string
	start    time.Time // wall clock, for rid cost_in_ms
	// contentType is set by handlers that answer a binary body (apis.go).
	contentType string
}

func newCall(api string, r *http.Request) *call {
	c := &call{api: api, r: r, query: r.URL.Query(), start: time.Now()}
	if r.Body != nil {
		limit := bodyLimit(api)
		c.body, c.bodyErr = io.ReadAll(io.LimitReader(r.Body, limit+1))
		if int64(len(c.body)) > limit {
			c.body, c.tooLarge = c.body[:limit], true
		}
	}
	if len(bytes.TrimSpace(c.body)) > 0 && !c.tooLarge {
		dec := json.NewDecoder(bytes.NewReader(c.body))
		dec.UseNumber()
		if err := dec.Decode(&c.fields); err == nil && c.fields != nil {
			c.jsonOK = true
		}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil {
			c.ip = ip.Unmap()
		}
	}
	return c
}

// q returns a query parameter.
func (c *call) q(name string) string { return c.query.Get(name) }

// field returns a string field of the JSON body.
func (c *call) field(name string) string {
	switch v := c.fields[name].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// flag returns a boolean field of the JSON body; WeChat also accepts 0/1.
func (c *call) flag(name string) bool {
	switch v := c.fields[name].(type) {
	case bool:
		return v
	case json.Number:
		return v.String() != "0"
	case string:
		return v == "true" || v == "1"
	}
	return false
}

// appIDOf names the app a call belongs to, for stats, quotas and rids: the
// appid it names, else the owner of the token it carries. Callers hold s.mu.
func (s *Sim) appIDOf(c *call) string {
	if id := c.q("appid"); id != "" {
		return id
	}
	for _, k := range []string{"authorizer_appid", "appid", "component_appid"} {
		if id := c.field(k); id != "" {
			return id
		}
	}
	for _, k := range []string{"access_token", "component_access_token"} {
		tok := c.q(k)
		if tok == "" {
			continue
		}
		if t, ok := s.tokens[tok]; ok {
			return t.appID
		}
		if t, ok := s.userTokens[tok]; ok {
			return t.appID
		}
	}
	return ""
}
