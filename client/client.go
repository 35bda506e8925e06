// Package client is the Go library services use to get WeChat access tokens
// from wxbroker instead of calling WeChat themselves.
//
// It caches each token until shortly before its expires_at, reports a token
// that WeChat rejected (errcode 40001, 42001 or 40014) so the broker refreshes
// it conditionally, and offers an http.RoundTripper that adds the token to
// WeChat API calls and retries such a call once with the new token.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Options configures a Client.
type Options struct {
	// BaseURL is the broker's internal API, e.g. "http://wxbroker:8080". Required.
	BaseURL string
	// Key is this service's client key (the broker stores its sha256). Required.
	Key string
	// Namespace is the environment namespace to read from, e.g. "prod". Required.
	Namespace string
	// HTTPClient talks to the broker; nil means a client with a 10s timeout.
	HTTPClient *http.Client
	// Margin is how long before expires_at a cached token is read again;
	// zero means 60s.
	Margin time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Token is an access token as the broker handed it out.
type Token struct {
	AccessToken string    `json:"access_token"`
	ExpiresIn   int64     `json:"expires_in"`
	ExpiresAt   time.Time `json:"expires_at"`
	Generation  int64     `json:"generation"`
}

// Error is an error answered by the broker.
type Error struct {
	Status  int    // HTTP status
	Code    string // e.g. "forbidden", "not_found", "unavailable"
	Message string
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("wxbroker: %d %s: %s", e.Status, e.Code, e.Message)
}

// Client reads tokens from wxbroker. It is safe for concurrent use.
type Client struct {
	base   string
	key    string
	ns     string
	hc     *http.Client
	margin time.Duration
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]Token
	sf    singleflight.Group
}

// New returns a Client. It fails when a required option is missing.
func New(opts Options) (*Client, error) {
	switch {
	case opts.BaseURL == "":
		return nil, errors.New("client: Options.BaseURL is required")
	case opts.Key == "":
		return nil, errors.New("client: Options.Key is required")
	case opts.Namespace == "":
		return nil, errors.New("client: Options.Namespace is required")
	}
	c := &Client{
		base:   strings.TrimRight(opts.BaseURL, "/"),
		key:    opts.Key,
		ns:     opts.Namespace,
		hc:     opts.HTTPClient,
		margin: opts.Margin,
		now:    opts.Now,
		cache:  make(map[string]Token),
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 10 * time.Second}
	}
	if c.margin <= 0 {
		c.margin = 60 * time.Second
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// sharedTimeout bounds a request shared by several callers. It runs
// detached from any one caller's context (a caller that gives up must not
// fail the others), so it needs a bound of its own in case HTTPClient has
// no timeout.
const sharedTimeout = 30 * time.Second

// AccessToken returns a valid access token for appid, from the local cache
// while it has more than Margin left, else from the broker. Concurrent calls
// for one appid share one request; each caller waits only as long as its
// own ctx allows, and one caller giving up does not fail the others.
func (c *Client) AccessToken(ctx context.Context, appid string) (string, error) {
	c.mu.Lock()
	tok, ok := c.cache[appid]
	c.mu.Unlock()
	if ok && c.now().Add(c.margin).Before(tok.ExpiresAt) {
		return tok.AccessToken, nil
	}
	t, err := c.shared(ctx, appid, appid, http.MethodGet, c.tokenURL(appid), nil)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// Invalidate reports that failed met errcode 40001/42001/40014 and returns
// the token the broker holds after its conditional refresh (the broker
// checks the report with WeChat and answers failed itself if WeChat still
// accepts it). Reports of one token share one request, as AccessToken's
// reads do. A spent forced-refresh budget is an *Error with Status 429.
func (c *Client) Invalidate(ctx context.Context, appid, failed string) (string, error) {
	body, err := json.Marshal(map[string]string{"access_token": failed})
	if err != nil {
		return "", fmt.Errorf("client: encode invalidation: %w", err)
	}
	t, err := c.shared(ctx, "invalidate\x00"+appid+"\x00"+failed, appid, http.MethodPost, c.tokenURL(appid)+"/invalidate", body)
	if err != nil {
		return "", err
	}
	return t.AccessToken, nil
}

// shared makes one broker request per key at a time, detached from the
// callers' contexts, stores its token, and hands it to every caller still
// waiting; each caller stops waiting when its own ctx ends.
func (c *Client) shared(ctx context.Context, key, appid, method, u string, body []byte) (Token, error) {
	ch := c.sf.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedTimeout)
		defer cancel()
		t, err := c.fetch(fctx, method, u, body)
		if err == nil {
			c.store(appid, t)
		}
		return t, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, fmt.Errorf("client: wait for the broker: %w", context.Cause(ctx))
	}
}

func (c *Client) store(appid string, t Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.cache[appid]; ok && old.Generation > t.Generation && old.ExpiresAt.After(c.now()) {
		return // an older answer arrived late
	}
	c.cache[appid] = t
}

func (c *Client) tokenURL(appid string) string {
	return c.base + "/v1/namespaces/" + url.PathEscape(c.ns) + "/apps/" + url.PathEscape(appid) + "/access_token"
}

func (c *Client) fetch(ctx context.Context, method, u string, body []byte) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return Token{}, fmt.Errorf("client: build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("client: ask broker: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Token{}, fmt.Errorf("client: read broker answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &e)
		return Token{}, &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	var t Token
	if err := json.Unmarshal(data, &t); err != nil {
		return Token{}, fmt.Errorf("client: decode broker answer: %w", err)
	}
	if t.AccessToken == "" {
		return Token{}, errors.New("client: broker answered without an access_token")
	}
	return t, nil
}

// Transport returns an http.RoundTripper for WeChat API calls of appid: it
// sets the access_token query parameter on every request and, when WeChat
// answers errcode 40001, 42001 or 40014, reports the token and retries the
// request once with the new one. When the broker may not refresh (429, the
// forced-refresh budget is spent) WeChat's original answer is returned
// unchanged. Requests with a body must be replayable
// (http.NewRequest sets GetBody for the usual body types). base nil means
// http.DefaultTransport.
func (c *Client) Transport(appid string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{c: c, appid: appid, base: base}
}

type transport struct {
	c     *Client
	appid string
	base  http.RoundTripper
}

// maxInspect bounds how much of a WeChat answer is buffered to look for an
// errcode; token errors are small JSON objects.
const maxInspect = 64 << 10

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.c.AccessToken(ctx, t.appid)
	if err != nil {
		return nil, err
	}
	resp, err := t.base.RoundTrip(withToken(req, tok))
	if err != nil {
		return nil, err
	}
	code, resp, err := errcodeOf(resp)
	if err != nil || !invalidCredential(code) {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil // cannot replay: hand the 40001 to the caller
	}
	fresh, err := t.c.Invalidate(ctx, t.appid, tok)
	var be *Error
	if errors.As(err, &be) && be.Status == http.StatusTooManyRequests {
		// The broker may not refresh now (force budget spent): WeChat's
		// own answer is the truth to hand back, not a broker error.
		return resp, nil
	}
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("client: errcode %d from wechat, then: %w", code, err)
	}
	retry := req
	if req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("client: replay request body: %w", err)
		}
		retry = req.Clone(ctx)
		retry.Body = b
	}
	return t.base.RoundTrip(withToken(retry, fresh))
}

func withToken(req *http.Request, tok string) *http.Request {
	r := req.Clone(req.Context())
	q := r.URL.Query()
	q.Set("access_token", tok)
	r.URL.RawQuery = q.Encode()
	return r
}

// errcodeOf peeks at a JSON answer's errcode and gives back a response whose
// body reads from the start.
func errcodeOf(resp *http.Response) (int, *http.Response, error) {
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") && resp.Header.Get("Content-Type") != "" &&
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		return 0, resp, nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxInspect))
	if err != nil {
		resp.Body.Close()
		return 0, nil, fmt.Errorf("client: read wechat answer: %w", err)
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	var e struct {
		Errcode int `json:"errcode"`
	}
	if json.Unmarshal(head, &e) != nil {
		return 0, resp, nil
	}
	return e.Errcode, resp, nil
}

func invalidCredential(code int) bool {
	return code == 40001 || code == 42001 || code == 40014
}
