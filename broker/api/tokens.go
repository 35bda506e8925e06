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

// authenticate returns the client whose key the request carries.
func (a *API) authenticate(c echo.Context) (*client, error) {
	cl := a.view.Load().keys.lookup(bearer(c.Request().Header.Get(echo.HeaderAuthorization)))
	if cl == nil {
		return nil, errNoKey
	}
	return cl, nil
}

// authorize authenticates the request and checks that its client may read
// ns/appid. The allow check comes before any lookup, so a client learns
// nothing about apps it may not read.
func (a *API) authorize(c echo.Context, ns, appid string) (*client, error) {
	cl, err := a.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.allows(ns, appid) {
		return cl, errForbidden
	}
	return cl, nil
}

// getAccessToken serves GET /v1/namespaces/:ns/apps/:appid/access_token.
// It is the hot path the token-read targets of docs/BENCHMARKS.md measure:
// one map lookup finds the app's counter and the memo of its current token
// (audit reference, quoted value, expires_at text), so a read does no
// hashing, formatting or allocation of its own.
func (a *API) getAccessToken(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, err := a.authorize(c, ns, appid)
	if err != nil {
		a.record(c, eventAccessToken, cl, ns, appid, err, "")
		return err
	}
	tok, err := a.tokens.AccessToken(ns, appid)
	ai := a.view.Load().apps[appKey{ns, appid}]
	if err != nil || ai == nil {
		a.record(c, eventAccessToken, cl, ns, appid, err, tok.AccessToken)
		if err != nil {
			return err
		}
		buf := getBuf()
		defer putBuf(buf)
		*buf = appendTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, a.now(), tok.Generation)
		return writeJSON(c, http.StatusOK, *buf)
	}
	m := ai.memoFor(tok)
	ai.ok.Inc()
	// One clock read serves the audit line and expires_in, unless a clock
	// was injected for expires_in (tests).
	now := time.Now()
	a.auditRead(c, now, cl, ai, m.ref)
	if !a.realClock {
		now = a.now()
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = m.appendJSON(*buf, now, tok.Generation)
	return writeJSON(c, http.StatusOK, *buf)
}

// auditRead writes the audit line of a successful token read of ai by cl.
// With the default audit log, the line's fields up to the token reference
// are encoded once per client and app and then copied (client.auditFields).
func (a *API) auditRead(c echo.Context, now time.Time, cl *client, ai *appInfo, ref string) {
	if a.audit.log == nil {
		a.auditRef(c, eventAccessToken, cl, ai.ns, ai.appid, metrics.RequestOK, ref)
		return
	}
	a.audit.log.linePrefixed(now, cl.auditFields(a.audit.log, ai), ref, c.Request().RemoteAddr)
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
func (a *API) invalidate(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, tok, err := a.doInvalidate(c, ns, appid)
	a.record(c, eventInvalidate, cl, ns, appid, err, tok.AccessToken)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, a.now(), tok.Generation)
	return writeJSON(c, http.StatusOK, *buf)
}

func (a *API) doInvalidate(c echo.Context, ns, appid string) (*client, broker.Token, error) {
	cl, err := a.authorize(c, ns, appid)
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
	tok, err := a.tokens.ReportFailure(ctx, ns, appid, broker.Report{Token: req.AccessToken,
		Source: metrics.SourceClient, Proof: broker.Unproven, Charge: chargeTo(cl.reports)})
	return cl, tok, err
}

// tokenError reports whether a WeChat errcode says the access token is no
// good (wechat.TokenRejected): the gateway then reports the token it
// injected and retries once.
func tokenError(code int) bool { return wechat.TokenRejected(code) }

// getTicket serves GET /v1/namespaces/:ns/apps/:appid/tickets/:type.
func (a *API) getTicket(c echo.Context) error {
	ns, appid, typ := c.Param("ns"), c.Param("appid"), c.Param("type")
	cl, err := a.authorize(c, ns, appid)
	if err != nil {
		a.record(c, eventTicket, cl, ns, appid, err, "")
		return err
	}
	t, err := a.tokens.Ticket(ns, appid, typ)
	a.record(c, eventTicket, cl, ns, appid, err, t.Ticket)
	if err != nil {
		return err
	}
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendTicketJSON(*buf, t.Ticket, t.ExpiresAt, a.now())
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
func (a *API) jssdkSignature(c echo.Context) error {
	ns, appid := c.Param("ns"), c.Param("appid")
	cl, err := a.authorize(c, ns, appid)
	var req signatureRequest
	if err == nil {
		err = decodeJSON(c, &req)
	}
	if err == nil {
		err = checkPageURL(req.URL)
	}
	if err != nil {
		a.record(c, eventJSSDK, cl, ns, appid, err, "")
		return err
	}
	t, err := a.tokens.Ticket(ns, appid, "jsapi")
	a.record(c, eventJSSDK, cl, ns, appid, err, t.Ticket)
	if err != nil {
		return err
	}
	nonce := rand.Text()[:16]
	ts := a.now().Unix()
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

// status serves GET /v1/status to admin clients.
func (a *API) status(c echo.Context) error {
	cl, err := a.authenticate(c)
	if err != nil {
		return err
	}
	if !cl.admin {
		return errAdminOnly
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, a.tokens.Status(c.Request().Context()))
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
