package login

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

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

// authenticate checks the Bearer access token: signature, expiry, logout
// denylist and family revocation, all per request.
func (s *Server) authenticate(c echo.Context) (*claims, error) {
	tok := bearer(c)
	if tok == "" {
		return nil, errUnauthorized("缺少访问令牌 / missing Authorization: Bearer access token")
	}
	cl, err := s.signer.verify(tok, s.now(), 0)
	if err != nil {
		return nil, errUnauthorized("访问令牌无效或已过期 / access token invalid or expired")
	}
	if err := s.checkRevoked(c.Request().Context(), cl); err != nil {
		if errors.Is(err, errFamilyRevoked) {
			return nil, errUnauthorized("登录已失效，请重新登录 / session ended, log in again")
		}
		return nil, err
	}
	return cl, nil
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

// refresh serves POST /api/v1/auth/refresh: the body's refresh_token, or
// the Bearer access token (as the seed front end sends), is exchanged for a
// new pair. An access token may have expired at most
// login.jwt.access_refresh_leeway ago: access tokens travel to every
// downstream service and end up in their logs, so an old one must not work
// as a refresh credential for refresh_ttl.
func (s *Server) refresh(c echo.Context) error {
	ctx := c.Request().Context()
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := decodeBody(c, &req); err != nil {
		s.count(metrics.FlowRefresh, resultInvalid)
		return err
	}
	var fid, kind, value string
	switch {
	case req.RefreshToken != "":
		f, err := s.familyOf(ctx, req.RefreshToken)
		if err != nil {
			return s.refreshFailed(err)
		}
		fid, kind, value = f, credRefresh, req.RefreshToken
	case bearer(c) != "":
		cl, err := s.signer.verify(bearer(c), s.now(), s.accessLeeway)
		if err != nil {
			s.count(metrics.FlowRefresh, resultUnauthorized)
			return errUnauthorized("访问令牌无效 / access token invalid")
		}
		if err := s.checkRevoked(ctx, cl); err != nil {
			return s.refreshFailed(err)
		}
		fid, kind, value = cl.SID, credJTI, cl.ID
	default:
		s.count(metrics.FlowRefresh, resultInvalid)
		return errBadRequest("缺少 refresh_token 或 Bearer 访问令牌 / send {\"refresh_token\"} or Authorization: Bearer")
	}
	r, err := s.rotate(ctx, fid, kind, value)
	if err != nil {
		if errors.Is(err, errFamilyReuse) {
			s.log.Warn("rotated refresh credential reused, session revoked", zap.String("user_id", r.uid))
		}
		return s.refreshFailed(err)
	}
	if r.replayed {
		// Metered: a client retrying a lost answer is normal now and then;
		// a steady rate means clients racing their own refreshes.
		s.count(metrics.FlowRefresh, resultReplayed)
		if ce := s.log.Check(zap.InfoLevel, "previous refresh credential presented again within the reuse window"); ce != nil {
			ce.Write(zap.String("user_id", r.uid), zap.Duration("reuse_window", s.reuseWindow))
		}
	} else {
		s.count(metrics.FlowRefresh, metrics.ResultSuccess)
	}
	return s.ok(c, "success", s.tokenData(r.pair, nil))
}

func (s *Server) refreshFailed(err error) error {
	switch {
	case errors.Is(err, errFamilyReuse):
		s.count(metrics.FlowRefresh, resultReuse)
		return errUnauthorized("刷新令牌已被使用，登录已失效，请重新登录 / refresh token reused: session revoked, log in again")
	case errors.Is(err, errFamilyRevoked):
		s.count(metrics.FlowRefresh, resultUnauthorized)
		return errUnauthorized("登录已失效，请重新登录 / session ended, log in again")
	case errors.Is(err, errFamilyGone):
		s.count(metrics.FlowRefresh, resultUnauthorized)
		return errUnauthorized("刷新令牌无效或已过期 / refresh token invalid or expired")
	default:
		s.count(metrics.FlowRefresh, metrics.ResultError)
		return err
	}
}

// logout serves POST /api/v1/auth/logout: the Bearer access token is
// denylisted until it expires and its refresh family revoked. A body
// {"refresh_token"} alone revokes that token's family.
func (s *Server) logout(c echo.Context) error {
	ctx := c.Request().Context()
	if bearer(c) == "" {
		var req struct {
			RefreshToken string `json:"refresh_token"`
		}
		if err := decodeBody(c, &req); err != nil {
			s.count(metrics.FlowLogout, resultInvalid)
			return err
		}
		if req.RefreshToken == "" {
			s.count(metrics.FlowLogout, resultUnauthorized)
			return errUnauthorized("缺少访问令牌 / missing Authorization: Bearer access token")
		}
		fid, err := s.familyOf(ctx, req.RefreshToken)
		if err != nil {
			s.count(metrics.FlowLogout, resultUnauthorized)
			if errors.Is(err, errFamilyGone) {
				return errUnauthorized("刷新令牌无效或已过期 / refresh token invalid or expired")
			}
			return err
		}
		if err := s.revoke(ctx, fid, "", s.now()); err != nil {
			s.count(metrics.FlowLogout, metrics.ResultError)
			return err
		}
		s.count(metrics.FlowLogout, metrics.ResultSuccess)
		return s.ok(c, "退出成功", map[string]string{"message": "退出成功"})
	}
	cl, err := s.authenticate(c)
	if err != nil {
		s.count(metrics.FlowLogout, resultUnauthorized)
		return err
	}
	if err := s.revoke(ctx, cl.SID, cl.ID, cl.ExpiresAt.Time); err != nil {
		s.count(metrics.FlowLogout, metrics.ResultError)
		return err
	}
	s.count(metrics.FlowLogout, metrics.ResultSuccess)
	if ce := s.log.Check(zap.DebugLevel, "user logged out"); ce != nil {
		ce.Write(zap.String("user_id", cl.uid))
	}
	return s.ok(c, "退出成功", map[string]string{"message": "退出成功"})
}

// currentUser finds the user of the Bearer token, else of the session cookie.
func (s *Server) currentUser(c echo.Context) (*user, error) {
	ctx := c.Request().Context()
	var uid string
	if bearer(c) != "" {
		cl, err := s.authenticate(c)
		if err != nil {
			return nil, err
		}
		uid = cl.uid
	} else {
		id, err := s.sessionUser(c)
		if err != nil {
			return nil, err
		}
		if id == "" {
			return nil, errUnauthorized("未登录 / not logged in: send Authorization: Bearer or the session cookie")
		}
		uid = id
	}
	u, err := s.loadUser(ctx, uid)
	if errors.Is(err, errNoUser) {
		return nil, errUnauthorized("用户不存在 / user no longer exists")
	}
	return u, err
}

// profile serves GET /api/v1/user/profile.
func (s *Server) profile(c echo.Context) error {
	u, err := s.currentUser(c)
	if err != nil {
		return err
	}
	appid := ""
	if s.mp != nil {
		appid = s.mp.appid
	}
	return s.ok(c, "success", s.view(u, appid))
}
