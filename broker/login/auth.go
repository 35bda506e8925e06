package login

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
)

// bearer returns the token of an "Authorization: Bearer" header, "" when absent.
func bearer(c echo.Context) string {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// decodeBody decodes an optional JSON body into v; an empty body is fine.
func decodeBody(c echo.Context, v any) error {
	body, err := io.ReadAll(c.Request().Body)
	var he *echo.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
		// A body without Content-Length (chunked) that runs past the limit.
		return &apiError{status: http.StatusRequestEntityTooLarge, message: "请求体过大 / request body too large"}
	}
	if err != nil {
		return errBadRequest("请求体无法读取 / request body unreadable")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errBadRequest("请求体不是有效的 JSON / request body is not valid JSON")
	}
	return nil
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// authRoutes are the JSON routes of the tokens a login hands out:
// refresh, logout and the profile of the user they belong to.
type authRoutes struct {
	responder
	families     *families
	users        *users
	signer       *signer       // refresh with an access token past its expiry
	accessLeeway time.Duration // login.jwt.access_refresh_leeway
	store        *store        // web sessions: the profile's user without a Bearer token
	mp           *flowApp      // nil: no mini program; the profile's openid is the website's
	log          *zap.Logger
}

// refresh serves POST /api/v1/auth/refresh: the body's refresh_token, or
// the Bearer access token (as the seed front end sends), is exchanged for a
// new pair. An access token may have expired at most
// login.jwt.access_refresh_leeway ago: access tokens travel to every
// downstream service and end up in their logs, so an old one must not work
// as a refresh credential for refresh_ttl.
func (ar *authRoutes) refresh(c echo.Context) error {
	ctx := c.Request().Context()
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := decodeBody(c, &req); err != nil {
		ar.count(metrics.FlowRefresh, resultInvalid)
		return err
	}
	var fid, kind, value string
	switch {
	case req.RefreshToken != "":
		f, err := ar.families.familyOf(ctx, req.RefreshToken)
		if err != nil {
			return ar.refreshFailed(err)
		}
		fid, kind, value = f, credRefresh, req.RefreshToken
	case bearer(c) != "":
		cl, err := ar.signer.verify(bearer(c), ar.now(), ar.accessLeeway)
		if err != nil {
			ar.count(metrics.FlowRefresh, resultUnauthorized)
			return errUnauthorized("访问令牌无效 / access token invalid")
		}
		if err := ar.families.checkRevoked(ctx, cl); err != nil {
			return ar.refreshFailed(err)
		}
		fid, kind, value = cl.SID, credJTI, cl.ID
	default:
		ar.count(metrics.FlowRefresh, resultInvalid)
		return errBadRequest("缺少 refresh_token 或 Bearer 访问令牌 / send {\"refresh_token\"} or Authorization: Bearer")
	}
	r, err := ar.families.rotate(ctx, fid, kind, value)
	if err != nil {
		if errors.Is(err, errFamilyReuse) {
			ar.log.Warn("rotated refresh credential reused, session revoked", zap.String("user_id", r.uid))
		}
		return ar.refreshFailed(err)
	}
	if r.replayed {
		// Metered: a client retrying a lost answer is normal now and then;
		// a steady rate means clients racing their own refreshes.
		ar.count(metrics.FlowRefresh, resultReplayed)
		if ce := ar.log.Check(zap.InfoLevel, "previous refresh credential presented again within the reuse window"); ce != nil {
			ce.Write(zap.String("user_id", r.uid), zap.Duration("reuse_window", ar.families.reuseWindow))
		}
	} else {
		ar.count(metrics.FlowRefresh, metrics.ResultSuccess)
	}
	return ar.ok(c, "success", ar.families.tokenData(r.pair, nil))
}

func (ar *authRoutes) refreshFailed(err error) error {
	switch {
	case errors.Is(err, errFamilyReuse):
		ar.count(metrics.FlowRefresh, resultReuse)
		return errUnauthorized("刷新令牌已被使用，登录已失效，请重新登录 / refresh token reused: session revoked, log in again")
	case errors.Is(err, errFamilyRevoked):
		ar.count(metrics.FlowRefresh, resultUnauthorized)
		return errUnauthorized("登录已失效，请重新登录 / session ended, log in again")
	case errors.Is(err, errFamilyGone):
		ar.count(metrics.FlowRefresh, resultUnauthorized)
		return errUnauthorized("刷新令牌无效或已过期 / refresh token invalid or expired")
	default:
		ar.count(metrics.FlowRefresh, metrics.ResultError)
		return err
	}
}

// logout serves POST /api/v1/auth/logout: the Bearer access token is
// denylisted until it expires and its refresh family revoked. A body
// {"refresh_token"} alone revokes that token's family.
func (ar *authRoutes) logout(c echo.Context) error {
	ctx := c.Request().Context()
	if bearer(c) == "" {
		var req struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := decodeBody(c, &req); err != nil {
			ar.count(metrics.FlowLogout, resultInvalid)
			return err
		}
		if req.RefreshToken == "" {
			ar.count(metrics.FlowLogout, resultUnauthorized)
			return errUnauthorized("缺少访问令牌 / missing Authorization: Bearer access token")
		}
		fid, err := ar.families.familyOf(ctx, req.RefreshToken)
		if err != nil {
			ar.count(metrics.FlowLogout, resultUnauthorized)
			if errors.Is(err, errFamilyGone) {
				return errUnauthorized("刷新令牌无效或已过期 / refresh token invalid or expired")
			}
			return err
		}
		if err := ar.families.revoke(ctx, fid, "", ar.now()); err != nil {
			ar.count(metrics.FlowLogout, metrics.ResultError)
			return err
		}
		ar.count(metrics.FlowLogout, metrics.ResultSuccess)
		return ar.ok(c, "退出成功", map[string]string{"message": "退出成功"})
	}
	cl, err := ar.families.authenticate(c)
	if err != nil {
		ar.count(metrics.FlowLogout, resultUnauthorized)
		return err
	}
	if err := ar.families.revoke(ctx, cl.SID, cl.ID, cl.ExpiresAt.Time); err != nil {
		ar.count(metrics.FlowLogout, metrics.ResultError)
		return err
	}
	ar.count(metrics.FlowLogout, metrics.ResultSuccess)
	if ce := ar.log.Check(zap.DebugLevel, "user logged out"); ce != nil {
		ce.Write(zap.String("user_id", cl.uid))
	}
	return ar.ok(c, "退出成功", map[string]string{"message": "退出成功"})
}

// currentUser finds the user of the Bearer token, else of the session cookie.
func (ar *authRoutes) currentUser(c echo.Context) (*user, error) {
	ctx := c.Request().Context()
	var uid string
	if bearer(c) != "" {
		cl, err := ar.families.authenticate(c)
		if err != nil {
			return nil, err
		}
		uid = cl.uid
	} else {
		id, err := sessionUser(c, ar.store)
		if err != nil {
			return nil, err
		}
		if id == "" {
			return nil, errUnauthorized("未登录 / not logged in: send Authorization: Bearer or the session cookie")
		}
		uid = id
	}
	u, err := ar.users.loadUser(ctx, uid)
	if errors.Is(err, errNoUser) {
		return nil, errUnauthorized("用户不存在 / user no longer exists")
	}
	return u, err
}

// profile serves GET /api/v1/user/profile.
func (ar *authRoutes) profile(c echo.Context) error {
	u, err := ar.currentUser(c)
	if err != nil {
		return err
	}
	appid := ""
	if ar.mp != nil {
		appid = ar.mp.appid
	}
	return ar.ok(c, "success", ar.users.view(u, appid))
}
