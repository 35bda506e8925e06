package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
)

// Error codes of the {"error":{"code","message"}} body. They double as the
// result label of wxbroker_token_requests_total (besides "ok"), so the set is
// fixed.
const (
	codeUnauthorized     = "unauthorized"
	codeForbidden        = "forbidden"
	codeNotFound         = "not_found"
	codeUnavailable      = "unavailable"
	codeTooManyRequests  = "too_many_requests"
	codeBadRequest       = "bad_request"
	codePayloadTooLarge  = "payload_too_large"
	codeMethodNotAllowed = "method_not_allowed"
	codeInternal         = "internal"
)

// apiError is an error with its HTTP status, code and a message that is safe
// to show to the caller.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return "api: " + e.code + ": " + e.message }

var (
	errNoKey      = &apiError{http.StatusUnauthorized, codeUnauthorized, "missing or unknown client key: send Authorization: Bearer <client key>"}
	errForbidden  = &apiError{http.StatusForbidden, codeForbidden, "this client key may not read that namespace/app"}
	errAdminOnly  = &apiError{http.StatusForbidden, codeForbidden, "this route needs an admin client key"}
	errTooLarge   = &apiError{http.StatusRequestEntityTooLarge, codePayloadTooLarge, "request body is too large"}
	errNoRoute    = &apiError{http.StatusNotFound, codeNotFound, "no such route"}
	errBadMethod  = &apiError{http.StatusMethodNotAllowed, codeMethodNotAllowed, "method not allowed on this route"}
	errInternal   = &apiError{http.StatusInternalServerError, codeInternal, "internal error"}
	errUnknownApp = &apiError{http.StatusNotFound, codeNotFound, "unknown namespace or appid"}
	errUnknownTkt = &apiError{http.StatusNotFound, codeNotFound, "ticket type not configured for this app"}
	errNoToken    = &apiError{http.StatusServiceUnavailable, codeUnavailable, "no valid token available right now; retry shortly"}
	errForceLimit = &apiError{http.StatusTooManyRequests, codeTooManyRequests, "forced refresh budget for this app is used up (force_min_interval or daily cap); keep using the current token"}
	errTimeout    = &apiError{http.StatusServiceUnavailable, codeUnavailable, "timed out waiting for a refreshed token; retry shortly"}
)

func badRequest(msg string) *apiError {
	return &apiError{http.StatusBadRequest, codeBadRequest, msg}
}

// classify maps any error a handler returns to the answer the caller sees.
// It is the one place that decides status codes, so handlers just return err.
func classify(err error) *apiError {
	var ae *apiError
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, broker.ErrUnknownApp):
		return errUnknownApp
	case errors.Is(err, broker.ErrUnknownTicket):
		return errUnknownTkt
	case errors.Is(err, broker.ErrNoToken):
		return errNoToken
	case errors.Is(err, broker.ErrForceLimited):
		return errForceLimit
	case errors.As(err, &mbe):
		return errTooLarge
	case errors.Is(err, context.DeadlineExceeded):
		return errTimeout
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return errNoRoute
		case http.StatusMethodNotAllowed:
			return errBadMethod
		case http.StatusRequestEntityTooLarge:
			return errTooLarge
		case http.StatusUnauthorized:
			return errNoKey
		}
		if he.Code >= 400 && he.Code < 500 {
			return &apiError{he.Code, codeBadRequest, http.StatusText(he.Code)}
		}
	}
	return errInternal
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// handleError is the echo HTTPErrorHandler: one JSON error shape, no internals.
func (a *API) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := classify(err)
	if ae == errInternal {
		a.log.Error("internal api error", zap.String("route", c.Path()), zap.Error(err))
	} else if ce := a.log.Check(zap.DebugLevel, "api request refused"); ce != nil {
		ce.Write(zap.String("route", c.Path()), zap.Int("status", ae.status), zap.String("code", ae.code))
	}
	if ae.status == http.StatusUnauthorized {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="wxbroker"`)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	var werr error
	if c.Request().Method == http.MethodHead {
		werr = c.NoContent(ae.status)
	} else {
		werr = c.JSON(ae.status, errorBody{Error: errorDetail{Code: ae.code, Message: ae.message}})
	}
	if werr != nil {
		a.log.Debug("write api error", zap.Error(werr))
	}
}
