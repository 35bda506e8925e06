package wechat

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Open Platform (third-party platform) calls beyond ComponentToken and
// AuthorizerToken (token.go). Each authenticates with the
// component_access_token in the query, except StartPushTicket, which
// carries the component AppSecret in the body. WeChat checks every one
// against the platform's IP whitelist (61004).

// StartPushTicket asks WeChat to (re)start pushing component_verify_ticket
// to the platform's authorization-event URL (POST
// /cgi-bin/component/api_start_push_ticket); a push follows shortly. Call it
// when no valid ticket is known, e.g. at first start. Errors: *APIError,
// *TransportError.
func (c *Client) StartPushTicket(ctx context.Context, componentAppID, componentSecret string) error {
	return c.do(ctx, request{
		api: APIStartPushTicket, method: http.MethodPost, path: "/cgi-bin/component/api_start_push_ticket",
		body: struct {
			AppID  string `json:"component_appid"`
			Secret string `json:"component_secret"`
		}{componentAppID, componentSecret},
		secrets: []string{componentSecret},
	}, nil)
}

// PreAuthCode is a pre-authorization code, which opens WeChat's
// authorization page for one merchant.
type PreAuthCode struct {
	Code      string
	ExpiresIn time.Duration // 30 minutes at WeChat
}

// PreAuthCode creates a pre-authorization code (POST
// /cgi-bin/component/api_create_preauthcode) for the authorization link
// https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=…&pre_auth_code=…&redirect_uri=….
// Errors: *APIError (InvalidCredential: the component token is stale),
// *TransportError.
func (c *Client) PreAuthCode(ctx context.Context, componentAccessToken, componentAppID string) (PreAuthCode, error) {
	var a struct {
		Code      string  `json:"pre_auth_code"`
		ExpiresIn flexInt `json:"expires_in"`
	}
	var p PreAuthCode
	err := c.do(ctx, request{
		api: APICreatePreAuthCode, method: http.MethodPost, path: "/cgi-bin/component/api_create_preauthcode",
		query: url.Values{"component_access_token": {componentAccessToken}},
		body: struct {
			AppID string `json:"component_appid"`
		}{componentAppID},
		secrets: []string{componentAccessToken},
		check: func() error {
			if a.Code == "" {
				return errMissing("pre_auth_code")
			}
			d, err := lifetime(a.ExpiresIn)
			p = PreAuthCode{Code: a.Code, ExpiresIn: d}
			return err
		},
	}, &a)
	return p, err
}

// Authorization is what an authorization code is exchanged for: the
// authorizer's AppID, its first access token and the refresh token that
// mints the next ones. FuncScopes are the permission-set ids granted
// (funcscope_category.id).
type Authorization struct {
	AuthorizerAppID string
	AccessToken     string
	ExpiresIn       time.Duration
	RefreshToken    string
	FuncScopes      []int
}

// QueryAuth exchanges an authorization code (from the authorized or
// updateauthorized event, or the auth_code of the redirect) for the
// authorizer's tokens (POST /cgi-bin/component/api_query_auth). The code is
// single use, so the call is never repeated on a fallback URL once WeChat
// may have processed it. 61009/61010: the code is invalid or expired.
// Errors: *APIError, *TransportError.
func (c *Client) QueryAuth(ctx context.Context, componentAccessToken, componentAppID, authorizationCode string) (Authorization, error) {
	var a struct {
		Info struct {
			AppID        string  `json:"authorizer_appid"`
			AccessToken  string  `json:"authorizer_access_token"`
			ExpiresIn    flexInt `json:"expires_in"`
			RefreshToken string  `json:"authorizer_refresh_token"`
			FuncInfo     []struct {
				Scope struct {
					ID int `json:"id"`
				} `json:"funcscope_category"`
			} `json:"func_info"`
		} `json:"authorization_info"`
	}
	var auth Authorization
	err := c.do(ctx, request{
		api: APIQueryAuth, method: http.MethodPost, path: "/cgi-bin/component/api_query_auth",
		query: url.Values{"component_access_token": {componentAccessToken}},
		body: struct {
			AppID string `json:"component_appid"`
			Code  string `json:"authorization_code"`
		}{componentAppID, authorizationCode},
		secrets: []string{componentAccessToken, authorizationCode},
		once:    true,
		check: func() error {
			in := a.Info
			switch {
			case in.AppID == "":
				return errMissing("authorization_info.authorizer_appid")
			case in.AccessToken == "":
				return errMissing("authorization_info.authorizer_access_token")
			case in.RefreshToken == "":
				return errMissing("authorization_info.authorizer_refresh_token")
			}
			d, err := lifetime(in.ExpiresIn)
			auth = Authorization{AuthorizerAppID: in.AppID, AccessToken: in.AccessToken, ExpiresIn: d, RefreshToken: in.RefreshToken}
			for _, f := range in.FuncInfo {
				auth.FuncScopes = append(auth.FuncScopes, f.Scope.ID)
			}
			return err
		},
	}, &a)
	return auth, err
}

// AuthorizerEntry is one authorized account in AuthorizerList.
type AuthorizerEntry struct {
	AppID        string
	RefreshToken string
	AuthTime     time.Time
}

// MaxAuthorizerPage is the most entries AuthorizerList may ask for at once.
const MaxAuthorizerPage = 500

// AuthorizerList returns one page of the accounts that authorized the
// component, each with its current refresh token, and the total count
// (POST /cgi-bin/component/api_get_authorizer_list): the way to recover
// refresh tokens that were lost. count is 1 to MaxAuthorizerPage. Errors:
// *APIError, *TransportError.
func (c *Client) AuthorizerList(ctx context.Context, componentAccessToken, componentAppID string, offset, count int) ([]AuthorizerEntry, int, error) {
	if offset < 0 || count < 1 || count > MaxAuthorizerPage {
		return nil, 0, errors.New("wechat: " + APIGetAuthorizerList + ": want offset >= 0 and 1 <= count <= 500")
	}
	var a struct {
		Total flexInt `json:"total_count"`
		List  []struct {
			AppID        string  `json:"authorizer_appid"`
			RefreshToken string  `json:"refresh_token"`
			AuthTime     flexInt `json:"auth_time"`
		} `json:"list"`
	}
	var out []AuthorizerEntry
	var total int
	err := c.do(ctx, request{
		api: APIGetAuthorizerList, method: http.MethodPost, path: "/cgi-bin/component/api_get_authorizer_list",
		query: url.Values{"component_access_token": {componentAccessToken}},
		body: struct {
			AppID  string `json:"component_appid"`
			Offset int    `json:"offset"`
			Count  int    `json:"count"`
		}{componentAppID, offset, count},
		secrets: []string{componentAccessToken},
		check: func() error {
			total = int(a.Total)
			for i, e := range a.List {
				if e.AppID == "" || e.RefreshToken == "" {
					return errMissing("list[" + strconv.Itoa(i) + "] authorizer_appid or refresh_token")
				}
				out = append(out, AuthorizerEntry{AppID: e.AppID, RefreshToken: e.RefreshToken, AuthTime: time.Unix(int64(e.AuthTime), 0)})
			}
			return nil
		},
	}, &a)
	return out, total, err
}
