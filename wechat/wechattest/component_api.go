package wechattest

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// componentRoute answers the Open Platform APIs of component.go (part of
// extraRoute). The two token endpoints are routed in sim.go.
func componentRoute(path string) (route, bool) {
	switch path {
	case "/cgi-bin/component/api_start_push_ticket":
		return route{apiStartPushTicket, http.MethodPost, (*Sim).startPushTicket}, true
	case "/cgi-bin/component/api_create_preauthcode":
		return route{apiCreatePreAuthCode, http.MethodPost, (*Sim).createPreAuthCode}, true
	case "/cgi-bin/component/api_query_auth":
		return route{apiQueryAuth, http.MethodPost, (*Sim).queryAuth}, true
	case "/cgi-bin/component/api_get_authorizer_list":
		return route{apiGetAuthorizerList, http.MethodPost, (*Sim).getAuthorizerList}, true
	}
	return route{}, false
}

// componentAPI reports whether api names a route of componentRoute or the
// simulator's pushes.
func componentAPI(api string) bool {
	switch api {
	case apiStartPushTicket, apiCreatePreAuthCode, apiQueryAuth, apiGetAuthorizerList, apiComponentEventPush:
		return true
	}
	return false
}

// componentCall authenticates a call that carries a component_access_token
// (?component_access_token=, or ?access_token= as newer docs write it) and
// names its component in the body: 41001/40001/40014/42001 for the token,
// 47001 for a body that is not JSON, 40013 for a component_appid that is
// not the token's, 61004 for a caller outside the component's IP
// allow-list. It returns the registered component, or nil for an app used
// as a component without AddComponent. Callers hold s.mu.
func (s *Sim) componentCall(c *call) (*component, []byte) {
	tok := c.q("component_access_token")
	if tok == "" {
		tok = c.q("access_token")
	}
	ct, fail := s.checkToken(c, tok, kindComponent)
	if fail != nil {
		return nil, fail
	}
	if !c.jsonOK {
		return nil, s.errBody(c, 47001, "")
	}
	if c.field("component_appid") != ct.appID {
		return nil, s.errBody(c, 40013, "")
	}
	if a := s.apps[ct.appID]; a != nil && !a.ipAllowed(c) {
		return nil, s.errBody(c, 61004, "")
	}
	return s.comps.byID[ct.appID], nil
}

// startPushTicket serves POST /cgi-bin/component/api_start_push_ticket
// {component_appid, component_secret}: a registered component gets a
// ticket push right away (from RunPushes); answers {"errcode":0,"errmsg":"ok"}.
func (s *Sim) startPushTicket(c *call) []byte {
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	appID := c.field("component_appid")
	if _, fail := s.checkSecret(c, appID, c.field("component_secret"), 61004); fail != nil {
		return fail
	}
	if _, ok := s.comps.byID[appID]; ok {
		s.askTicketPush(appID)
	}
	return okBody()
}

// createPreAuthCode serves POST /cgi-bin/component/api_create_preauthcode:
// {"pre_auth_code","expires_in":1800}. The code opens the authorization
// page once.
func (s *Sim) createPreAuthCode(c *call) []byte {
	comp, fail := s.componentCall(c)
	if fail != nil {
		return fail
	}
	code := "preauthcode@@@" + rand.Text()
	if comp != nil {
		comp.preAuth[code] = s.now().Add(preAuthCodeTTL)
	}
	b, _ := json.Marshal(struct {
		PreAuthCode string `json:"pre_auth_code"`
		ExpiresIn   int64  `json:"expires_in"`
	}{code, int64(preAuthCodeTTL / time.Second)})
	return b
}

// funcInfo is the permission set every simulated authorization grants.
type funcInfo struct {
	Scope struct {
		ID int `json:"id"`
	} `json:"funcscope_category"`
}

// queryAuth serves POST /cgi-bin/component/api_query_auth
// {component_appid, authorization_code}: the authorization code (single
// use; 61009 unknown or used, 61010 expired) becomes the authorizer's
// access token (classic last-fetch-wins, like api_authorizer_token) and
// refresh token.
func (s *Sim) queryAuth(c *call) []byte {
	comp, fail := s.componentCall(c)
	if fail != nil {
		return fail
	}
	if comp == nil {
		return s.errBody(c, 61011, "")
	}
	cd, ok := comp.authCodes[c.field("authorization_code")]
	switch {
	case !ok || cd.used:
		return s.errBody(c, 61009, "")
	case !s.now().Before(cd.expiresAt):
		return s.errBody(c, 61010, "")
	}
	auth := comp.authorizers[cd.authorizer]
	if auth == nil || auth.revoked {
		return s.errBody(c, 61009, "")
	}
	cd.used = true
	t := s.mintLastWins(s.authorizerApp(cd.authorizer), kindAuthorizer)
	var fi funcInfo
	fi.Scope.ID = 1
	type info struct {
		AuthorizerAppID        string     `json:"authorizer_appid"`
		AuthorizerAccessToken  string     `json:"authorizer_access_token"`
		ExpiresIn              int64      `json:"expires_in"`
		AuthorizerRefreshToken string     `json:"authorizer_refresh_token"`
		FuncInfo               []funcInfo `json:"func_info"`
	}
	b, _ := json.Marshal(struct {
		AuthorizationInfo info `json:"authorization_info"`
	}{info{cd.authorizer, t.value, int64(s.opts.TokenTTL / time.Second), auth.refreshToken, []funcInfo{fi}}})
	return b
}

// getAuthorizerList serves POST /cgi-bin/component/api_get_authorizer_list
// {component_appid, offset, count ≤ 500}: the active authorizations in
// authorization order, each with its current refresh token, the recovery
// path for lost refresh tokens.
func (s *Sim) getAuthorizerList(c *call) []byte {
	comp, fail := s.componentCall(c)
	if fail != nil {
		return fail
	}
	if comp == nil {
		return s.errBody(c, 61011, "")
	}
	offset, err1 := strconv.Atoi(c.field("offset"))
	count, err2 := strconv.Atoi(c.field("count"))
	if err1 != nil || err2 != nil || offset < 0 || count < 1 || count > 500 {
		return s.errBody(c, 40097, "invalid args: offset >= 0 and 1 <= count <= 500")
	}
	type item struct {
		AuthorizerAppID string `json:"authorizer_appid"`
		RefreshToken    string `json:"refresh_token"`
		AuthTime        int64  `json:"auth_time"`
	}
	list := []item{}
	for _, id := range comp.order {
		if a := comp.authorizers[id]; !a.revoked {
			list = append(list, item{id, a.refreshToken, a.authTime.Unix()})
		}
	}
	total := len(list)
	list = list[min(offset, total):min(offset+count, total)]
	b, _ := json.Marshal(struct {
		TotalCount int    `json:"total_count"`
		List       []item `json:"list"`
	}{total, list})
	return b
}

// checkVerifyTicket applies WeChat's ticket rules to a registered
// component: 61006 for a ticket the simulator did not mint for it, 61005
// for one older than VerifyTicketTTL. Callers hold s.mu.
func (s *Sim) checkVerifyTicket(c *call, comp *component, ticket string) []byte {
	minted, ok := comp.tickets[ticket]
	switch {
	case !ok:
		return s.errBody(c, 61006, "")
	case s.now().Sub(minted) >= s.opts.VerifyTicketTTL:
		return s.errBody(c, 61005, "")
	}
	return nil
}

// registeredAuthorizerToken serves api_authorizer_token for a registered
// component: 61003 for an account that never authorized it, 61023 for a
// refresh token that is not the current one (revoked, rotated, made up),
// 45009 beyond the authorizer's quota; with rotation on, the answer carries
// a new refresh token and the one sent dies. Callers hold s.mu.
func (s *Sim) registeredAuthorizerToken(c *call, comp *component) []byte {
	authorizer := c.field("authorizer_appid")
	auth, ok := comp.authorizers[authorizer]
	if !ok {
		return s.errBody(c, 61003, "")
	}
	if auth.revoked || c.field("authorizer_refresh_token") != auth.refreshToken {
		return s.errBody(c, 61023, "")
	}
	a := s.authorizerApp(authorizer)
	if fail := s.takeQuota(c, a, apiAuthorizerToken); fail != nil {
		return fail
	}
	if comp.cfg.RotateRefreshTokens {
		auth.refreshToken = newRefreshToken()
	}
	t := s.mintLastWins(a, kindAuthorizer)
	return authorizerTokenBody(t.value, s.opts.TokenTTL, auth.refreshToken)
}

func authorizerTokenBody(tok string, ttl time.Duration, refresh string) []byte {
	b, _ := json.Marshal(struct {
		AuthorizerAccessToken  string `json:"authorizer_access_token"`
		ExpiresIn              int64  `json:"expires_in"`
		AuthorizerRefreshToken string `json:"authorizer_refresh_token"`
	}{tok, int64(ttl / time.Second), refresh})
	return b
}
