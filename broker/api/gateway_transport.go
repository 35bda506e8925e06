package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
)

// peekMax bounds how much of a JSON answer the gateway reads before passing
// it on: WeChat's error answers are far smaller. A larger answer is not an
// error answer and streams untouched.
const peekMax = 4 << 10

// gatewayTransport sends the gateway's requests: to base_url, then to each
// fallback URL while an attempt fails before the request was written (so
// WeChat cannot have seen it), and once more with a new token when WeChat
// answers 40001/42001/40014 for the token the gateway injected.
type gatewayTransport struct {
	g     *gateway
	bases []*url.URL
	rt    http.RoundTripper
}

func newGatewayTransport(g *gateway, bases []*url.URL) *gatewayTransport {
	return &gatewayTransport{
		g:     g,
		bases: bases,
		rt: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   512,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
			// Answers arrive as WeChat sent them (no transparent gzip), so
			// Content-Length survives and errcodes can be read.
			DisableCompression: true,
		},
	}
}

// RoundTrip implements http.RoundTripper for the ReverseProxy.
func (t *gatewayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c := callFrom(req.Context())
	c.sent = c.token
	resp, err := t.send(req, c)
	if err != nil {
		return nil, err
	}
	code, resp, err := peekErrcode(resp)
	if err != nil {
		return nil, err
	}
	c.errcode = code
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		c.result = metrics.GatewayHTTPError
	}
	if c.token == "" || !tokenError(code) || c.download || !jsonType(resp.Header.Get("Content-Type")) {
		return resp, nil
	}
	// WeChat refused the token the gateway injected: report it (checked
	// with WeChat, one conditional refresh across all replicas, within the
	// caller's report budget and the force budget), and re-send the request
	// once with the new token if the body was kept.
	tok, retry := t.g.reportFailure(req.Context(), c)
	switch {
	case retry != "":
		c.retry = retry
		return resp, nil
	case c.body != nil && !c.body.replayable():
		c.retry = metrics.RetryNotReplayable
		return resp, nil
	}
	_ = resp.Body.Close()
	again := req.Clone(req.Context())
	q := again.URL.Query()
	q.Set(c.tokenParam(), tok.AccessToken)
	again.URL.RawQuery = q.Encode()
	if c.body != nil {
		again.Body, again.GetBody, again.ContentLength = c.body.replay()
	}
	c.sent = tok.AccessToken
	resp, err = t.send(again, c)
	if err != nil {
		c.retry = metrics.RetryFailed
		return nil, err
	}
	code, resp, err = peekErrcode(resp)
	if err != nil {
		c.retry = metrics.RetryFailed
		return nil, err
	}
	c.errcode = code
	c.result = ""
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		c.result = metrics.GatewayHTTPError
	}
	c.retry = metrics.RetrySuccess
	if tokenError(code) {
		c.retry = metrics.RetryFailed
	}
	return resp, nil
}

// send tries the base URLs in order while an attempt fails before anything
// of the request was written.
func (t *gatewayTransport) send(req *http.Request, c *gwCall) (*http.Response, error) {
	var lastErr error
	for i, base := range t.bases {
		var wrote atomic.Bool
		out := req
		if len(t.bases) > 1 && i < len(t.bases)-1 {
			// Only an attempt that may be followed by a fallback needs to
			// know whether it was written.
			out = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
				WroteHeaders: func() { wrote.Store(true) },
			}))
		} else {
			cp := *req // shallow: only URL, Host and Body are replaced
			out = &cp
		}
		// The transport closes the body it was given, even on a failed
		// dial; every attempt gets one that is still readable: a re-sent
		// request's GetBody, else the caller's body (whose Close does
		// nothing; the ReverseProxy's wrapper around it refuses reads
		// after its Close).
		switch {
		case i > 0 && req.GetBody != nil:
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			out.Body = body
		case req.GetBody == nil && c.body != nil:
			out.Body = c.body
		}
		u := *base
		u.Path = base.Path + req.URL.Path
		u.RawPath = ""
		u.RawQuery = req.URL.RawQuery
		out.URL = &u
		out.Host = ""
		resp, err := t.rt.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if wrote.Load() || req.Context().Err() != nil || c.body != nil && c.body.started() {
			break // WeChat may have seen it: the outcome is unknown
		}
	}
	return nil, lastErr
}

// peekErrcode reads a small JSON answer to find its errcode and hands back
// a response whose body yields the same bytes. Other answers (images,
// large JSON) are returned untouched with code 0.
func peekErrcode(resp *http.Response) (int, *http.Response, error) {
	if !jsonish(resp.Header.Get("Content-Type")) || resp.Header.Get("Content-Encoding") != "" ||
		resp.ContentLength > peekMax {
		return 0, resp, nil
	}
	n := peekMax + 1
	if resp.ContentLength >= 0 {
		n = int(resp.ContentLength)
	}
	buf := make([]byte, n)
	got, err := io.ReadFull(resp.Body, buf)
	buf = buf[:got]
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && resp.ContentLength < 0, errors.Is(err, io.EOF) && got == 0:
		// The whole (short) answer is in buf.
	case err != nil:
		_ = resp.Body.Close()
		return 0, nil, err
	case resp.ContentLength < 0:
		// Longer than peekMax: not an error answer.
		resp.Body = &peekedBody{Reader: io.MultiReader(bytes.NewReader(buf), resp.Body), Closer: resp.Body}
		return 0, resp, nil
	}
	resp.Body = &peekedBody{Reader: bytes.NewReader(buf), Closer: resp.Body}
	return errcodeOf(buf), resp, nil
}

type peekedBody struct {
	io.Reader
	io.Closer
}

// jsonish reports whether a Content-Type may carry a WeChat JSON answer:
// WeChat labels some JSON answers text/plain. Their errcode is counted in
// the metrics; only one labelled JSON (jsonType) is taken as WeChat's word
// on the token.
func jsonish(ct string) bool {
	return strings.Contains(ct, "json") || strings.HasPrefix(ct, "text/plain")
}

// jsonType reports whether a Content-Type is JSON: application/json or a
// +json type, parameters aside.
func jsonType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// errcodeOf returns the "errcode" member of b when b is one JSON object
// whose errcode, at the top level, is an integer; 0 otherwise. An errcode
// nested in another member (a caller's own data echoed back) or in text that
// is not JSON does not count. Like a JSON decoder, the last of duplicate
// members wins; a name spelled with escapes is not matched.
func errcodeOf(b []byte) int {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' || !json.Valid(b) {
		return 0
	}
	// b is valid JSON: strings are closed, brackets balance.
	code, depth, atKey := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '{', '[':
			depth++
			atKey = depth == 1
		case '}', ']':
			depth--
		case ',':
			atKey = depth == 1
		case '"':
			j := i + 1
			for b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			name := b[i+1 : j]
			i = j
			if !atKey {
				continue
			}
			atKey = false
			if string(name) != "errcode" {
				continue
			}
			v := bytes.TrimLeft(b[j+1:], " \t\r\n:")
			end := 0
			for end < len(v) && (v[end] == '-' || v[end] >= '0' && v[end] <= '9') {
				end++
			}
			code = 0
			if end < len(v) && bytes.IndexByte([]byte(",} \t\r\n"), v[end]) >= 0 {
				if n, err := strconv.Atoi(string(v[:end])); err == nil {
					code = n
				}
			}
		}
	}
	return code
}

// replayBody is a request body on its way to WeChat. It counts what was
// read, and keeps a copy (when the gateway's re-send budget allows) so that
// the request can be sent once more. The transport reads it from its own
// goroutine, so its state is guarded.
type replayBody struct {
	rc       io.ReadCloser
	g        *gateway
	reserved int64 // bytes of the re-send budget held; released by release

	reading atomic.Bool // a Read is waiting for the caller's bytes

	mu     sync.Mutex
	buf    []byte
	keep   bool
	read   int64
	eof    bool
	large  bool
	broken bool // reading the caller's body failed (deadline, connection)
}

// newReplayBody wraps r's body, limited to gateway.max_body_bytes. It keeps a
// copy when the body is known (or, without Content-Length, allowed) to fit
// in gateway.retry_body_bytes and the memory budget has room for it.
func (g *gateway) newReplayBody(w http.ResponseWriter, r *http.Request) *replayBody {
	b := &replayBody{rc: http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes), g: g}
	want := g.cfg.RetryBodyBytes
	if r.ContentLength >= 0 {
		if r.ContentLength > want {
			return b
		}
		want = r.ContentLength
	}
	if want <= 0 {
		return b
	}
	if g.retryMem.Add(-want) < 0 {
		g.retryMem.Add(want)
		return b
	}
	b.reserved = want
	b.keep = true
	// A declared size is allocated once (it is reserved from the budget
	// anyway; growing by doubling would leave garbage behind); a chunked
	// body's copy grows as it arrives.
	if r.ContentLength > 0 {
		b.buf = make([]byte, 0, r.ContentLength)
	} else {
		b.buf = make([]byte, 0, min(want, 32<<10))
	}
	return b
}

func (b *replayBody) Read(p []byte) (int, error) {
	b.reading.Store(true)
	n, err := b.rc.Read(p)
	b.reading.Store(false)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read += int64(n)
	if b.keep {
		if int64(len(b.buf)+n) > b.reserved {
			b.keep, b.buf = false, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		b.eof = true
	case errors.As(err, &mbe):
		b.large = true
	case err != nil:
		b.broken = true
	}
	return n, err
}

// Close does nothing: the server closes the caller's body, and the body
// must stay readable for a fallback attempt.
func (b *replayBody) Close() error { return nil }

func (b *replayBody) started() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read > 0
}

func (b *replayBody) tooLarge() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.large
}

// waiting reports whether a Read is waiting for the caller's bytes.
func (b *replayBody) waiting() bool { return b.reading.Load() }

// callerFault reports whether the call failed on the caller's side: its
// body could not be read, or the transport was still waiting for the
// caller's bytes (WeChat cannot answer a request it has not received).
func (b *replayBody) callerFault() bool {
	waiting := b.reading.Load()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.broken || waiting && !b.eof && !b.large
}

// replayable reports whether the whole body was read and kept.
func (b *replayBody) replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.keep && b.eof
}

// replay returns a body with the kept bytes for the re-sent request.
func (b *replayBody) replay() (io.ReadCloser, func() (io.ReadCloser, error), int64) {
	b.mu.Lock()
	data := b.buf
	b.mu.Unlock()
	get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	rc, _ := get()
	return rc, get, int64(len(data))
}

// release gives the re-send budget back.
func (b *replayBody) release() {
	if b.reserved > 0 {
		b.g.retryMem.Add(b.reserved)
		b.reserved = 0
	}
}
