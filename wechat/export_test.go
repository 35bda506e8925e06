package wechat

// The WeChat calls below have no caller in wxbroker, so the package does not
// provide them; they exist in test builds only (this file), where the tests
// use them to check the client's decoding and the simulator's routes
// (quota/get, rid/get, clear_quota/v2, checksession, sns/auth,
// oauth2/refresh_token), which stay for users' own tests.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
)

// ClearQuota resets the app's daily API quotas with its AppSecret (POST
// /cgi-bin/clear_quota/v2), which works even when no access token can be
// fetched any more. Each account may clear 10 times a month (48006 after).
// WeChat's docs disagree on where appid and appsecret go, so they are sent
// both in the query (the form SDKs ship) and in the JSON body. No fallback
// URL is tried once the request may have been processed. Errors: *APIError,
// *TransportError.
func (c *Client) ClearQuota(ctx context.Context, appID, secret string) error {
	return c.do(ctx, request{
		api: APIClearQuota, method: http.MethodPost, path: "/cgi-bin/clear_quota/v2",
		query: url.Values{"appid": {appID}, "appsecret": {secret}},
		body: struct {
			AppID  string `json:"appid"`
			Secret string `json:"appsecret"`
		}{appID, secret},
		secrets: []string{secret},
		once:    true,
	}, nil)
}

// Quota is an API's daily quota.
type Quota struct {
	DailyLimit, Used, Remain int64
}

// APIQuota reads the daily quota of one API (POST /cgi-bin/openapi/quota/get),
// cgiPath like "/cgi-bin/token" (leading slash, no host; /sns/* is not
// supported: 76022). Errors: *APIError, *TransportError.
func (c *Client) APIQuota(ctx context.Context, accessToken, cgiPath string) (Quota, error) {
	var a struct {
		Quota *struct {
			DailyLimit flexInt `json:"daily_limit"`
			Used       flexInt `json:"used"`
			Remain     flexInt `json:"remain"`
		} `json:"quota"`
	}
	err := c.do(ctx, request{
		api: APIQuotaGet, method: http.MethodPost, path: "/cgi-bin/openapi/quota/get",
		query: url.Values{"access_token": {accessToken}},
		body: struct {
			CgiPath string `json:"cgi_path"`
		}{cgiPath},
		secrets: []string{accessToken},
		check: func() error {
			if a.Quota == nil {
				return errMissing("quota")
			}
			return nil
		},
	}, &a)
	if err != nil {
		return Quota{}, err
	}
	return Quota{DailyLimit: int64(a.Quota.DailyLimit), Used: int64(a.Quota.Used), Remain: int64(a.Quota.Remain)}, nil
}

// RidInfo describes a past request, found by the rid in its errmsg.
type RidInfo struct {
	InvokeTime   int64 // Unix seconds
	CostInMs     int64
	RequestURL   string // the query string WeChat received
	RequestBody  string
	ResponseBody string
	ClientIP     string // the egress IP WeChat saw: the one to whitelist on 40164
}

// RidInfo looks up a request by rid (POST /cgi-bin/openapi/rid/get). Only the
// same account's rids of the last 7 days are found (76001–76004); /sns/*
// requests are not covered (76022). Errors: *APIError, *TransportError.
func (c *Client) RidInfo(ctx context.Context, accessToken, rid string) (RidInfo, error) {
	var a struct {
		Request *struct {
			InvokeTime   flexInt `json:"invoke_time"`
			CostInMs     flexInt `json:"cost_in_ms"`
			RequestURL   string  `json:"request_url"`
			RequestBody  string  `json:"request_body"`
			ResponseBody string  `json:"response_body"`
			ClientIP     string  `json:"client_ip"`
		} `json:"request"`
	}
	err := c.do(ctx, request{
		api: APIRidGet, method: http.MethodPost, path: "/cgi-bin/openapi/rid/get",
		query: url.Values{"access_token": {accessToken}},
		body: struct {
			Rid string `json:"rid"`
		}{rid},
		secrets: []string{accessToken},
		check: func() error {
			if a.Request == nil {
				return errMissing("request")
			}
			return nil
		},
	}, &a)
	if err != nil {
		return RidInfo{}, err
	}
	r := a.Request
	return RidInfo{
		InvokeTime: int64(r.InvokeTime), CostInMs: int64(r.CostInMs), RequestURL: r.RequestURL,
		RequestBody: r.RequestBody, ResponseBody: r.ResponseBody, ClientIP: r.ClientIP,
	}, nil
}

// SessionSignature is the hex HMAC-SHA256 of message keyed with the
// session_key text as given (base64, not decoded), as checkSessionKey
// expects.
func SessionSignature(sessionKey, message string) string {
	m := hmac.New(sha256.New, []byte(sessionKey))
	m.Write([]byte(message))
	return hex.EncodeToString(m.Sum(nil))
}

// CheckSession asks WeChat whether sessionKey is still the user's current
// session_key (GET /wxa/checksession, signed with SessionSignature(sessionKey,
// "")). 87009 means it is stale: the user must log in again. Errors:
// *APIError, *TransportError.
func (c *Client) CheckSession(ctx context.Context, accessToken, openID, sessionKey string) error {
	sig := SessionSignature(sessionKey, "")
	return c.do(ctx, request{
		api: APICheckSession, method: http.MethodGet, path: "/wxa/checksession",
		query: url.Values{
			"access_token": {accessToken}, "signature": {sig}, "openid": {openID}, "sig_method": {"hmac_sha256"},
		},
		secrets:  []string{accessToken, sessionKey, sig},
		readOnly: true,
	}, nil)
}

// OAuthRefreshToken renews a user's OAuth access token (GET
// /sns/oauth2/refresh_token; no AppSecret needed). 40030 and 42002 mean the
// refresh token is invalid or expired: the user must authorize again.
// Errors: *APIError, *TransportError.
func (c *Client) OAuthRefreshToken(ctx context.Context, appID, refreshToken string) (OAuthToken, error) {
	var a oauthAnswer
	var t OAuthToken
	err := c.do(ctx, request{
		api: APIOAuthRefreshToken, method: http.MethodGet, path: "/sns/oauth2/refresh_token",
		query: url.Values{
			"appid": {appID}, "grant_type": {"refresh_token"}, "refresh_token": {refreshToken},
		},
		secrets: []string{refreshToken},
		check:   func() (err error) { t, err = a.token(); return err },
	}, &a)
	return t, err
}

// OAuthCheck reports whether a user's OAuth access token is still valid for
// openID (GET /sns/auth): nil when it is, an *APIError (40003 invalid openid,
// 42001 expired, 40001) when not, a *TransportError when WeChat did not answer.
func (c *Client) OAuthCheck(ctx context.Context, accessToken, openID string) error {
	return c.do(ctx, request{
		api: APIOAuthCheck, method: http.MethodGet, path: "/sns/auth",
		query:    url.Values{"access_token": {accessToken}, "openid": {openID}},
		secrets:  []string{accessToken},
		readOnly: true,
	}, nil)
}
