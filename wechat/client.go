package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultBaseURL is WeChat's general API domain.
const DefaultBaseURL = "https://api.weixin.qq.com"

// DefaultTimeout bounds one attempt when Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// maxBody bounds the answers read from WeChat.
const maxBody = 1 << 20

// Options configures a Client. The zero value is usable: WeChat's default
// domain, no fallback, a 5s per-attempt timeout and a private HTTP client.
type Options struct {
	// HTTPClient sends the requests. Nil: a client with dial, TLS and idle
	// timeouts. The Client never follows redirects (a redirect would carry
	// secrets in the query to another host) and uses its own copy of this
	// http.Client, so the caller's CheckRedirect is left alone.
	HTTPClient *http.Client
	// BaseURL is the API root, default "https://api.weixin.qq.com". It may
	// carry a path prefix ("http://proxy/wx"); API paths are appended.
	BaseURL string
	// FallbackURLs are tried in order, only on transport failure, never on
	// an errcode (e.g. "https://api2.weixin.qq.com", WeChat's
	// disaster-recovery domain).
	FallbackURLs []string
	// Timeout bounds each attempt when ctx has no earlier deadline; default 5s.
	Timeout time.Duration
}

// Client calls WeChat's server APIs. Create it with New; the zero value is
// not usable. It is safe for concurrent use and holds no credentials: every
// call takes the AppSecret or token it needs.
//
// A Client never retries on its own beyond trying the fallback URLs after a
// transport failure, and it keeps net/http from silently resending calls
// with side effects, so every attempt WeChat may have processed is reported
// (OutcomeUnknown). Calls that consume a single-use input (login, phone and
// OAuth codes, clear_quota, a forced stable token, non-GET generic calls)
// are not sent to a fallback once WeChat may have processed them.
type Client struct {
	http    *http.Client
	bases   []*url.URL
	timeout time.Duration
}

// New checks opts and returns a Client. It fails when a URL is not an
// absolute http(s) URL without query or fragment, or Timeout is negative.
func New(opts Options) (*Client, error) {
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("wechat: Options.Timeout %v is negative", opts.Timeout)
	}
	c := &Client{timeout: opts.Timeout}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	base := opts.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := parseBase(base)
	if err != nil {
		return nil, fmt.Errorf("wechat: Options.BaseURL: %w", err)
	}
	c.bases = append(c.bases, u)
	for i, fb := range opts.FallbackURLs {
		u, err := parseBase(fb)
		if err != nil {
			return nil, fmt.Errorf("wechat: Options.FallbackURLs[%d]: %w", i, err)
		}
		c.bases = append(c.bases, u)
	}
	if opts.HTTPClient != nil {
		hc := *opts.HTTPClient
		c.http = &hc
	} else {
		c.http = &http.Client{Transport: defaultTransport()}
	}
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// parseBase validates a base URL. Its error never quotes the URL, which may
// carry proxy credentials.
func parseBase(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, errors.New("want an absolute http or https URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("must not carry a query or fragment")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func defaultTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// request describes one API call.
type request struct {
	api    string
	method string
	path   string     // may carry its own query (Call)
	query  url.Values // added to path's query
	body   any        // nil or a value to send as JSON
	// secrets are the caller's sensitive inputs (AppSecret, tokens, codes):
	// they are scrubbed from any error text that might echo them.
	secrets []string
	// once marks calls that consume a single-use input or a budget (a login
	// code, clear_quota): after an attempt WeChat may have processed, a
	// fallback would only get "code been used", so none is tried.
	once bool
	// readOnly marks calls without side effects (checksession, userinfo,
	// sns/auth, a generic GET): net/http may resend them by itself.
	readOnly bool
	// check validates a decoded success answer; a failure counts as an invalid answer.
	check func() error
}

// do runs r against the base URL and then the fallbacks while attempts fail
// at the transport level, decoding a success answer into out.
func (c *Client) do(ctx context.Context, r request, out any) error {
	var payload []byte
	if r.body != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r.body); err != nil {
			return fmt.Errorf("wechat: %s: encode request body: %w", r.api, err)
		}
		payload = bytes.TrimRight(buf.Bytes(), "\n")
	}
	var failed []*TransportError
	for _, base := range c.bases {
		err := c.attempt(ctx, base, &r, payload, out)
		var te *TransportError
		if !errors.As(err, &te) {
			return err // success or an errcode: an answer, never a reason to fall back
		}
		failed = append(failed, te)
		if ctx.Err() != nil || r.once && te.OutcomeUnknown() {
			break
		}
	}
	last := failed[len(failed)-1]
	last.earlier = failed[:len(failed)-1]
	return last
}

// attempt sends r to one base URL within the per-attempt timeout.
func (c *Client) attempt(ctx context.Context, base *url.URL, r *request, payload []byte, out any) error {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	var wrote atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	target, err := buildURL(base, r.path, r.query)
	if err != nil {
		return &TransportError{API: r.api, Kind: KindConnection, Err: err, notSent: true}
	}
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, r.method, target, body)
	if err != nil {
		return &TransportError{API: r.api, Kind: KindConnection, Err: scrub(redact(err), r.secrets), notSent: true}
	}
	if payload == nil && !r.readOnly {
		// net/http silently resends a bodiless GET once when a reused
		// keep-alive connection closes without an answer
		// (Transport.shouldRetryRequest). For a call with side effects that
		// hides an attempt WeChat may have processed: a second classic token
		// is minted, or a login code comes back "40163 code been used". A
		// request whose body cannot be rewound is never resent; the
		// transport finds this body empty and sends none. Retrying is the
		// caller's decision, made with OutcomeUnknown.
		req.Body = io.NopCloser(bytes.NewReader(nil))
		req.GetBody = nil
		req.ContentLength = 0
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "wxbroker")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(ctx, r, err, !wrote.Load())
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if resp.StatusCode != http.StatusOK {
		return &TransportError{API: r.api, Kind: KindStatus, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("%s %s", r.method, redactURL(target))}
	}
	if err != nil {
		return transportError(ctx, r, err, false)
	}
	if len(data) > maxBody {
		return invalidJSON(r.api, errBodyTooLong)
	}
	// HTML is recognised by the body, not by Content-Type: some WeChat
	// endpoints label JSON answers loosely.
	if err := decode(r.api, data, out); err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ae.Msg = scrubString(ae.Msg, r.secrets)
		}
		return err
	}
	if r.check != nil {
		if err := r.check(); err != nil {
			return invalidJSON(r.api, err)
		}
	}
	return nil
}

// transportError classifies a failed round trip. notSent is true when the
// request was never completely written, so WeChat cannot have processed it.
func transportError(ctx context.Context, r *request, err error, notSent bool) *TransportError {
	kind := KindConnection
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		kind = KindTimeout
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		kind = KindConnection
	}
	return &TransportError{API: r.api, Kind: kind, Err: scrub(redact(err), r.secrets), notSent: notSent}
}

// buildURL appends path (with its own query, if any) and query to base.
func buildURL(base *url.URL, path string, query url.Values) (string, error) {
	p, err := url.Parse(path)
	if err != nil || p.Scheme != "" || p.Host != "" || !strings.HasPrefix(p.Path, "/") {
		return "", errors.New("API path must be absolute and relative to the base URL")
	}
	u := *base
	u.Path = base.Path + p.Path
	u.RawPath = ""
	q := p.Query()
	for k, vs := range query {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// publicParams are the query parameters that are not secret and are kept
// when a URL is redacted. Everything else (secret, appsecret, access_token,
// js_code, code, refresh_token, component_*, signature, …) becomes REDACTED.
var publicParams = map[string]bool{
	"grant_type": true, "appid": true, "type": true, "openid": true, "lang": true, "sig_method": true,
}

// redactURL replaces secret query values and userinfo passwords in raw.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			if !publicParams[k] {
				for i := range q[k] {
					q[k][i] = "REDACTED"
				}
			}
		}
		u.RawQuery = q.Encode()
	}
	u.Fragment = ""
	return u.Redacted()
}

// redact copies a *url.Error with its URL redacted; other errors pass through.
func redact(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

// scrub hides secrets that err's text would reveal. It is a second line of
// defence behind URL redaction: when it triggers, the cause stays reachable
// through errors.Is but not through errors.Unwrap, which would hand out the
// unscrubbed text.
func scrub(err error, secrets []string) error {
	msg := err.Error()
	clean := scrubString(msg, secrets)
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, cause: err}
}

// scrubString replaces each secret (of 4 bytes or more) in s with REDACTED.
func scrubString(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}

type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string { return e.msg }

// Is lets errors.Is see context.DeadlineExceeded and the like in the cause.
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.cause, target) }

// Timeout reports whether the cause is a timeout.
func (e *scrubbedError) Timeout() bool {
	var ne net.Error
	return errors.As(e.cause, &ne) && ne.Timeout()
}
