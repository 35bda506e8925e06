package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
)

// The WeChat-compatible routes let existing WeChat SDKs use the broker by
// changing their API base URL only. They answer the way WeChat does: HTTP 200
// with {"errcode","errmsg"} on failure, so SDKs take their usual error path.

// wxError is a WeChat-shaped refusal; result is its wxbroker_token_requests_total
// label.
type wxError struct {
	code   int
	msg    string
	result string
}

func (e *wxError) Error() string { return e.msg }

var (
	wxBadGrant    = &wxError{40002, "invalid grant_type: wxbroker serves grant_type=client_credential only", codeBadRequest}
	wxNoAppID     = &wxError{41002, "appid missing", codeBadRequest}
	wxNoSecret    = &wxError{41004, "appsecret missing: pass your wxbroker client key as secret", codeBadRequest}
	wxBadKey      = &wxError{40125, "invalid appsecret: secret must be a wxbroker client key", codeUnauthorized}
	wxForbidden   = &wxError{48001, "api unauthorized: this wxbroker client key may not read that namespace/app", codeForbidden}
	wxUnknownApp  = &wxError{40013, "invalid appid: not configured in that wxbroker namespace (set header " + namespaceHeader + ")", codeNotFound}
	wxBadToken    = &wxError{40001, "invalid credential, access_token is invalid or not latest", codeUnauthorized}
	wxBadType     = &wxError{40097, "invalid args: ticket type is not configured for this app in wxbroker", codeNotFound}
	wxUnavailable = &wxError{-1, "system error: no valid token available in wxbroker right now, retry shortly", codeUnavailable}
	wxInternal    = &wxError{-1, "system error", codeInternal}
)

// compatSource is what the WeChat-compatible routes need of the broker
// (TokenSource).
type compatSource interface {
	tokenReader
	AppByToken(accessToken string) (ns, appid string, ok bool)
}

// compatRoutes are the WeChat-compatible routes: /cgi-bin/token,
// /cgi-bin/stable_token (stable.go) and /cgi-bin/ticket/getticket.
type compatRoutes struct {
	*desk
	tokens   compatSource
	handouts *handouts // last token per caller and app
	log      *zap.Logger
	now      func() time.Time
}

// routes registers the group's routes.
func (cr *compatRoutes) routes(add addFunc) {
	add(http.MethodGet, "/cgi-bin/token", cr.cgiToken)
	add(http.MethodPost, "/cgi-bin/stable_token", cr.cgiStableToken)
	add(http.MethodGet, "/cgi-bin/stable_token", cr.cgiStableToken)
	add(http.MethodGet, "/cgi-bin/ticket/getticket", cr.cgiGetTicket)
}

// wxFromBroker maps a broker error to WeChat's shape; an unexpected one is
// logged here, since the caller only sees "system error".
func (cr *compatRoutes) wxFromBroker(err error, unknownApp *wxError) *wxError {
	switch {
	case errors.Is(err, broker.ErrUnknownApp):
		return unknownApp
	case errors.Is(err, broker.ErrUnknownTicket):
		return wxBadType
	case errors.Is(err, broker.ErrNoToken):
		return wxUnavailable
	default:
		cr.log.Error("internal api error", zap.String("route", "cgi-bin"), zap.Error(err))
		return wxInternal
	}
}

func writeWeChatError(c echo.Context, e *wxError) error {
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendWeChatError(*buf, e)
	return writeJSON(c, http.StatusOK, *buf)
}

// appendWeChatError appends e as WeChat's {"errcode","errmsg"} JSON.
func appendWeChatError(b []byte, e *wxError) []byte {
	b = append(b, `{"errcode":`...)
	b = strconv.AppendInt(b, int64(e.code), 10)
	b = append(b, `,"errmsg":`...)
	b = appendString(b, e.msg)
	return append(b, '}')
}

// cgiToken serves GET /cgi-bin/token?grant_type=client_credential&appid=..&secret=<client key>.
// The namespace comes from the X-Wxbroker-Namespace header, else from the
// client's only namespace, else from the app itself (config validation
// guarantees an AppID is configured in one namespace only). A repeat by the
// same caller within repeatWindow is read as a failure report (compatToken).
func (cr *compatRoutes) cgiToken(c echo.Context) error {
	appid := c.QueryParam("appid")
	cl, ns, werr := cr.cgiTokenCheck(c, c.QueryParam("grant_type"), appid, c.QueryParam("secret"))
	return cr.compatToken(c, eventCGIToken, cl, ns, appid, werr, false)
}

func (cr *compatRoutes) cgiTokenCheck(c echo.Context, grant, appid, key string) (*client, string, *wxError) {
	ns := c.Request().Header.Get(namespaceHeader)
	if grant != "client_credential" {
		return nil, ns, wxBadGrant
	}
	if appid == "" {
		return nil, ns, wxNoAppID
	}
	if key == "" {
		return nil, ns, wxNoSecret
	}
	cl := cr.view.Load().keys.lookup(key)
	if cl == nil {
		return nil, ns, wxBadKey
	}
	if ns == "" {
		ns = cl.onlyNS
	}
	if ns == "" {
		ns = cr.view.Load().nsOfApp[appid]
	}
	if !cl.allows(ns, appid) {
		return cl, ns, wxForbidden
	}
	return cl, ns, nil
}

// cgiGetTicket serves GET /cgi-bin/ticket/getticket?access_token=..&type=jsapi.
// It needs no client key: a current access token handed out by the broker is
// the credential and names the app, as it does at WeChat.
func (cr *compatRoutes) cgiGetTicket(c echo.Context) error {
	ns, appid, ok := cr.tokens.AppByToken(c.QueryParam("access_token"))
	if !ok {
		cr.count(unknownNamespace, unknownApp, wxBadToken.result)
		cr.auditLine(c, eventCGIGetTicket, nil, "", "", wxBadToken.result, "")
		return writeWeChatError(c, wxBadToken)
	}
	t, err := cr.tokens.Ticket(ns, appid, c.QueryParam("type"))
	if err != nil {
		werr := cr.wxFromBroker(err, wxBadToken)
		cr.count(ns, appid, werr.result)
		cr.auditLine(c, eventCGIGetTicket, nil, ns, appid, werr.result, "")
		return writeWeChatError(c, werr)
	}
	cr.record(c, eventCGIGetTicket, nil, ns, appid, nil, t.Ticket)
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendWeChatTicketJSON(*buf, t.Ticket, t.ExpiresAt, cr.now())
	return writeJSON(c, http.StatusOK, *buf)
}
