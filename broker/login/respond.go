package login

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// envelope is the response shape of every JSON route, compatible with the
// seed front end: {"code","message","data","timestamp"} plus, on errors,
// "error" (the HTTP status text) and, for WeChat errors, errcode, hint, rid.
type envelope struct {
	Code      int    `json:"code"`
	Message   string `json:"message"`
	Data      any    `json:"data,omitempty"`
	Error     string `json:"error,omitempty"`
	Errcode   int    `json:"errcode,omitempty"`
	Hint      string `json:"hint,omitempty"`
	RID       string `json:"rid,omitempty"`
	Timestamp int64  `json:"timestamp"`
}

// apiError is an error a handler returns to answer with an error envelope.
type apiError struct {
	status  int
	message string
	errcode int
	hint    string
	rid     string
}

func (e *apiError) Error() string { return fmt.Sprintf("login: %d %s", e.status, e.message) }

func errBadRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, message: msg}
}

func errUnauthorized(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, message: msg}
}

// responder is what every route group of the package shares: the envelope of
// a JSON answer and the login counter. Each group embeds it.
type responder struct {
	metrics *metrics.Metrics
	now     func() time.Time
}

// ok answers data in a success envelope.
func (r responder) ok(c echo.Context, message string, data any) error {
	return c.JSON(http.StatusOK, envelope{Code: http.StatusOK, Message: message, Data: data, Timestamp: r.now().UnixMilli()})
}

// count counts a login request of flow by result (wxbroker_login_total).
func (r responder) count(flow, result string) {
	r.metrics.Login.WithLabelValues(flow, result).Inc()
}

// handleError is the one error-to-response mapping: *apiError as given,
// echo's own errors (404, 405, 413) with their status, anything else 500
// without internals (logged here, once).
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok && m != "" {
			msg = m
		}
		ae = &apiError{status: he.Code, message: msg}
	default:
		s.log.Error("login request failed", zap.String("route", c.Path()), zap.Error(err))
		ae = &apiError{status: http.StatusInternalServerError, message: "服务器内部错误 / internal error"}
	}
	env := envelope{
		Code: ae.status, Message: ae.message, Error: http.StatusText(ae.status),
		Errcode: ae.errcode, Hint: ae.hint, RID: ae.rid, Timestamp: s.now().UnixMilli(),
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.status)
		return
	}
	_ = c.JSON(ae.status, env)
}

// userErrcode reports the errcodes that are about the end user's own code
// or account (expired or reused code, risky user, per-user frequency
// limit): these are shown with their hint. Every other errcode (a wrong
// AppSecret, an IP whitelist, a quota, WeChat busy) is the operator's
// business: the end user sees generic text, while the errcode, hint and rid
// go to the log (and wxbroker explain).
func userErrcode(code int) bool {
	switch code {
	case 40029, 40163, 40226, 45011:
		return true
	}
	return false
}

// errLoginUnavailable is the generic public answer to a WeChat failure that
// is not the end user's.
var errLoginUnavailable = &apiError{status: http.StatusServiceUnavailable,
	message: "登录服务暂不可用，请稍后再试 / login is temporarily unavailable, try again later"}

// wechatError turns a failed WeChat call into an error envelope: an errcode
// about the user's code becomes status (401 for login codes) with the
// errcode, a bilingual hint and the rid; any other errcode becomes a generic
// 503 (the caller logs the details); a transport failure becomes 502.
func wechatError(err error, status int, prefix string) *apiError {
	var apiErr *wechat.APIError
	if errors.As(err, &apiErr) && !userErrcode(apiErr.Code) {
		return errLoginUnavailable
	}
	if errors.As(err, &apiErr) {
		msg := stripRID(apiErr.Msg)
		if msg == "" {
			msg = "errcode " + fmt.Sprint(apiErr.Code)
		}
		return &apiError{
			status:  status,
			message: fmt.Sprintf("%s: %s (错误码: %d)", prefix, msg, apiErr.Code),
			errcode: apiErr.Code,
			hint:    hintText(apiErr.Code),
			rid:     apiErr.RID,
		}
	}
	return &apiError{status: http.StatusBadGateway, message: prefix + ": 微信服务暂时不可用 / WeChat is unreachable, try again"}
}

// hintText is the bilingual hint for an errcode, "" when none is known.
func hintText(code int) string {
	h, ok := wechat.Explain(code)
	if !ok {
		return ""
	}
	zh, en := h.ZH, h.EN
	if h.FixZH != "" && !strings.Contains(zh, h.FixZH) {
		zh = strings.TrimSpace(zh + " " + h.FixZH)
	}
	if h.FixEN != "" && !strings.Contains(en, h.FixEN) {
		en = strings.TrimSpace(en + " " + h.FixEN)
	}
	switch {
	case zh != "" && en != "":
		return zh + " / " + en
	case zh != "":
		return zh
	default:
		return en
	}
}

// stripRID removes WeChat's trailing "rid: ..." (reported separately).
func stripRID(msg string) string {
	if i := strings.Index(msg, "rid:"); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimRight(strings.TrimSpace(msg), ",;")
}
