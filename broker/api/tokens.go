package api

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// Shared header values: net/http never mutates them, so one slice serves
// every response and a read costs no header allocation.
var (
	headerJSON    = []string{echo.MIMEApplicationJSON}
	headerNoStore = []string{"no-store"}
)

// writeJSON writes a pre-encoded JSON answer that must not be cached.
func writeJSON(c echo.Context, status int, body []byte) error {
	h := c.Response().Header()
	h[echo.HeaderContentType] = headerJSON
	h[echo.HeaderCacheControl] = headerNoStore
	c.Response().WriteHeader(status)
	_, err := c.Response().Write(body)
	return err
}

// tokenReader is what the token routes need of the broker (TokenSource).
type tokenReader interface {
	AccessToken(ns, appid string) (broker.Token, error)
	Ticket(ns, appid, typ string) (broker.Ticket, error)
	ReportFailure(ctx context.Context, ns, appid string, r broker.Report) (broker.Token, error)
}

// tokenRoutes are the credential routes of /v1: token and ticket reads, the
// conditional invalidation and the JS-SDK signature.
type tokenRoutes struct {
	*desk
	tokens tokenReader
	now    func() time.Time
	// realClock: Options.Now was nil, so now is time.Now and a token read
	// may use its one clock read for both its audit line and expires_in.
	realClock bool
}

// routes registers the group's routes.
func (tr *tokenRoutes) routes(add addFunc) {
	const app = "/v1/namespaces/:ns/apps/:appid"
	add(http.MethodGet, app+"/access_token", tr.getAccessToken)
	add(http.MethodPost, app+"/access_token/invalidate", tr.invalidate)
	add(http.MethodGet, app+"/tickets/:type", tr.getTicket)
	add(http.MethodPost, app+"/jssdk/signature", tr.jssdkSignature)
}

// getAccessToken serves GET /v1/namespaces/:ns/apps/:appid/access_token.
// It is the hot path the token-read targets of docs/BENCHMARKS.md measure:
// one map lookup finds the app's counter and the memo of its current token
// (audit reference, quoted value, expires_at text), so a read does no
// hashing, formatting or allocation of its own.
func (tr *tokenRoutes) getAccessToken(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, err := tr.authorize(c, ns, appid)
	if err != nil {
		tr.record(c, eventAccessToken, cl, ns, appid, err, "")
		return err
	}
	tok, err := tr.tokens.AccessToken(ns, appid)
	ai := tr.view.Load().apps[appKey{ns, appid}]
	if err != nil || ai == nil {
		tr.record(c, eventAccessToken, cl, ns, appid, err, tok.AccessToken)
		if err != nil {
			return err
		}
		buf := getBuf()
		defer putBuf(buf)
		*buf = appendTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, tr.now(), tok.Generation)
		return writeJSON(c, http.StatusOK, *buf)
	}
	m := ai.memoFor(tok)
	ai.ok.Inc()
	// One clock read serves the audit line and expires_in, unless a clock
	// was injected for expires_in (tests).
	now := time.Now()
	tr.auditRead(c, now, cl, ai, m.ref)
	if !tr.realClock {
		now = tr.now()
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = m.appendJSON(*buf, now, tok.Generation)
	return writeJSON(c, http.StatusOK, *buf)
}

// appInfo is what a token read needs about one configured app. Built by New;
// only memo changes afterwards.
type appInfo struct {
	ns, appid   string
	ok          prometheus.Counter // wxbroker_token_requests_total{wx_namespace, appid, "ok"}
	unavailable prometheus.Counter // wxbroker_token_requests_total{wx_namespace, appid, "unavailable"}
	memo        atomic.Pointer[tokenMemo]
	// reports bounds the gateway's reports for callers that present a
	// token instead of a client key (invalidate_guard.go).
	reports *rate.Limiter
}

// tokenMemo holds what stays the same while a token is current.
type tokenMemo struct {
	token     string
	expiresAt time.Time
	ref       string // tokenRef(token)
	quoted    []byte // token as a JSON string
	expText   []byte // expiresAt, RFC 3339 UTC
}

// memoFor returns the memo of tok, building it when the token (or its
// expiry) changed since the last read. Racing readers may each build one;
// they are equal.
func (ai *appInfo) memoFor(tok broker.Token) *tokenMemo {
	if m := ai.memo.Load(); m != nil && m.token == tok.AccessToken && m.expiresAt.Equal(tok.ExpiresAt) {
		return m
	}
	m := &tokenMemo{
		token:     tok.AccessToken,
		expiresAt: tok.ExpiresAt,
		ref:       tokenRef(tok.AccessToken),
		quoted:    appendString(nil, tok.AccessToken),
		expText:   tok.ExpiresAt.UTC().AppendFormat(nil, time.RFC3339),
	}
	ai.memo.Store(m)
	return m
}

// appendJSON encodes the token answer like appendTokenJSON.
func (m *tokenMemo) appendJSON(dst []byte, now time.Time, generation int64) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = append(dst, m.quoted...)
	dst = append(dst, `,"expires_in":`...)
	dst = strconv.AppendInt(dst, secondsLeft(m.expiresAt, now), 10)
	dst = append(dst, `,"expires_at":"`...)
	dst = append(dst, m.expText...)
	dst = append(dst, `","generation":`...)
	dst = strconv.AppendInt(dst, generation, 10)
	return append(dst, '}')
}

type invalidateRequest struct {
	AccessToken string `json:"access_token"`
}

// invalidate serves POST /v1/namespaces/:ns/apps/:appid/access_token/invalidate.
func (tr *tokenRoutes) invalidate(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, tok, err := tr.doInvalidate(c, ns, appid)
	tr.record(c, eventInvalidate, cl, ns, appid, err, tok.AccessToken)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, tr.now(), tok.Generation)
	return writeJSON(c, http.StatusOK, *buf)
}

func (tr *tokenRoutes) doInvalidate(c echo.Context, ns, appid string) (*client, broker.Token, error) {
	cl, err := tr.authorize(c, ns, appid)
	if err != nil {
		return cl, broker.Token{}, err
	}
	if err := cl.mayReport(); err != nil {
		return cl, broker.Token{}, err
	}
	var req invalidateRequest
	if err := decodeJSON(c, &req); err != nil {
		return cl, broker.Token{}, err
	}
	if req.AccessToken == "" {
		return cl, broker.Token{}, badRequest(`body must be {"access_token": "<the token that failed>"}`)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), invalidateTimeout)
	defer cancel()
	// A client's word carries no WeChat answer: the broker checks it first.
	// The client's report budget pays only for a report that costs WeChat
	// a call.
	tok, err := tr.tokens.ReportFailure(ctx, ns, appid, broker.Report{Token: req.AccessToken,
		Source: metrics.SourceClient, Proof: broker.Unproven, Charge: chargeTo(cl.reports)})
	return cl, tok, err
}

// tokenError reports whether a WeChat errcode says the access token is no
// good (wechat.TokenRejected): the gateway then reports the token it
// injected and retries once.
func tokenError(code int) bool { return wechat.TokenRejected(code) }

// getTicket serves GET /v1/namespaces/:ns/apps/:appid/tickets/:type.
func (tr *tokenRoutes) getTicket(c echo.Context) error {
	ns, appid, typ := c.Param("ns"), c.Param("appid"), c.Param("type")
	cl, err := tr.authorize(c, ns, appid)
	if err != nil {
		tr.record(c, eventTicket, cl, ns, appid, err, "")
		return err
	}
	t, err := tr.tokens.Ticket(ns, appid, typ)
	tr.record(c, eventTicket, cl, ns, appid, err, t.Ticket)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendTicketJSON(*buf, t.Ticket, t.ExpiresAt, tr.now())
	return writeJSON(c, http.StatusOK, *buf)
}

type signatureRequest struct {
	URL string `json:"url"`
}

type signatureResponse struct {
	AppID     string `json:"appId"`
	Timestamp int64  `json:"timestamp"`
	NonceStr  string `json:"nonceStr"`
	Signature string `json:"signature"`
}

// jssdkSignature serves POST /v1/namespaces/:ns/apps/:appid/jssdk/signature:
// the wx.config parameters for a page, signed with the app's jsapi ticket.
func (tr *tokenRoutes) jssdkSignature(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, err := tr.authorize(c, ns, appid)
	var req signatureRequest
	if err == nil {
		err = decodeJSON(c, &req)
	}
	if err == nil {
		err = checkPageURL(req.URL)
	}
	if err != nil {
		tr.record(c, eventJSSDK, cl, ns, appid, err, "")
		return err
	}
	t, err := tr.tokens.Ticket(ns, appid, "jsapi")
	tr.record(c, eventJSSDK, cl, ns, appid, err, t.Ticket)
	if err != nil {
		return err
	}
	nonce := rand.Text()[:16]
	ts := tr.now().Unix()
	return c.JSON(http.StatusOK, signatureResponse{
		AppID:     appid,
		Timestamp: ts,
		NonceStr:  nonce,
		Signature: wechat.JSAPISignature(t.Ticket, nonce, ts, req.URL),
	})
}

// checkPageURL accepts the absolute http(s) URL of the page calling wx.config.
func checkPageURL(raw string) error {
	if raw == "" {
		return badRequest(`body must be {"url": "<the page URL, as location.href.split('#')[0]>"}`)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return badRequest("url must be the absolute http(s) URL of the page")
	}
	return nil
}

// decodeJSON decodes exactly one JSON value from the (size-limited) body.
func decodeJSON(c echo.Context, v any) error {
	dec := json.NewDecoder(c.Request().Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body is empty; send a JSON object")
		}
		return badRequest("request body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge
		}
		return badRequest("request body has data after the JSON object")
	}
	return nil
}
