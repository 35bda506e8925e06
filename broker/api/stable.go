package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/metrics"
)

var (
	wxBadBody    = &wxError{47001, `data format error: body must be JSON {"grant_type":"client_credential","appid","secret":<wxbroker client key>,"force_refresh":bool}`, codeBadRequest}
	wxNeedsPOST  = &wxError{43002, "require POST method", codeMethodNotAllowed}
	wxBodyTooBig = &wxError{47001, "data format error: request body is too large", codePayloadTooLarge}
)

// stableTokenRequest is the body of POST /cgi-bin/stable_token.
type stableTokenRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// cgiStableToken serves POST /cgi-bin/stable_token with WeChat's body
// (secret = the wxbroker client key) from the cache, in WeChat's shape.
// force_refresh true reports the token this caller was last handed for the
// app as failed (compatToken). GET answers 43002, as WeChat does.
func (cr *compatRoutes) cgiStableToken(c echo.Context) error {
	if c.Request().Method != http.MethodPost {
		cr.count("", "", wxNeedsPOST.result)
		cr.auditLine(c, eventCGIStableToken, nil, "", "", wxNeedsPOST.result, "")
		return writeWeChatError(c, wxNeedsPOST)
	}
	var req stableTokenRequest
	if werr := decodeWeChatJSON(c, &req); werr != nil {
		ns := c.Request().Header.Get(namespaceHeader)
		cr.count(ns, "", werr.result)
		cr.auditLine(c, eventCGIStableToken, nil, ns, "", werr.result, "")
		return writeWeChatError(c, werr)
	}
	cl, ns, werr := cr.cgiTokenCheck(c, req.GrantType, req.AppID, req.Secret)
	return cr.compatToken(c, eventCGIStableToken, cl, ns, req.AppID, werr, req.ForceRefresh)
}

// decodeWeChatJSON decodes one JSON object from the (size-limited) body,
// refusing in WeChat's shape.
func decodeWeChatJSON(c echo.Context, v any) *wxError {
	dec := json.NewDecoder(c.Request().Body)
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = terr
			if err == nil {
				err = errors.New("data after the JSON object")
			}
		}
	}
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return wxBodyTooBig
	}
	return wxBadBody
}

// compatToken answers a token fetch on a WeChat-compatible route, after the
// caller's credentials were checked (werr). It serves the cached token,
// unless this fetch is a failure report: force (stable_token's
// force_refresh) reports the token this caller was last handed for the app
// (the current one when none is remembered); a repeat within repeatWindow
// that would hand out the same token again reports that token. A report is checked with WeChat before a refresh
// is spent (InvalidateUnproven); if it cannot be served (force budget spent,
// no new token in time), the current token is answered, as WeChat answers a
// forced refresh inside its 30 s interval.
func (cr *compatRoutes) compatToken(c echo.Context, event string, cl *client, ns, appid string, werr *wxError, force bool) error {
	if werr != nil {
		cr.count(ns, appid, werr.result)
		cr.auditLine(c, event, cl, ns, appid, werr.result, "")
		return writeWeChatError(c, werr)
	}
	tok, err := cr.tokens.AccessToken(ns, appid)
	if err != nil {
		werr = cr.wxFromBroker(err, wxUnknownApp)
		cr.count(ns, appid, werr.result)
		cr.auditLine(c, event, cl, ns, appid, werr.result, "")
		return writeWeChatError(c, werr)
	}
	now := cr.now()
	key := callerApp{client: cl.name, ip: remoteIP(c.Request().RemoteAddr), ns: ns, appid: appid}
	last, seen := cr.handouts.last(key)
	failed := ""
	switch {
	case force && seen:
		failed = last.token
	case force:
		failed = tok.AccessToken
	case seen && last.token == tok.AccessToken && now.Sub(last.at) < repeatWindow:
		failed = tok.AccessToken
	}
	if failed != "" {
		ctx, cancel := context.WithTimeout(c.Request().Context(), invalidateTimeout)
		fresh, rerr := cr.tokens.ReportFailure(ctx, ns, appid, broker.Report{Token: failed, Source: metrics.SourceCompat, Proof: broker.Unproven})
		cancel()
		if rerr == nil {
			tok = fresh
		} else if cur, err := cr.tokens.AccessToken(ns, appid); err == nil {
			tok = cur
			if ce := cr.log.Check(zap.DebugLevel, "compat failure report not served; answering the current token"); ce != nil {
				ce.Write(zap.String("namespace", ns), zap.String("appid", appid), zap.Error(rerr))
			}
		} else {
			werr = cr.wxFromBroker(err, wxUnknownApp)
			cr.count(ns, appid, werr.result)
			cr.auditLine(c, event, cl, ns, appid, werr.result, "")
			return writeWeChatError(c, werr)
		}
	}
	cr.handouts.put(handout{key: key, token: tok.AccessToken, at: now})
	cr.record(c, event, cl, ns, appid, nil, tok.AccessToken)
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendWeChatTokenJSON(*buf, tok.AccessToken, tok.ExpiresAt, now)
	return writeJSON(c, http.StatusOK, *buf)
}
