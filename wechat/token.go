package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"
)

// Token is an app's access token.
type Token struct {
	AccessToken string
	ExpiresIn   time.Duration // lifetime left when WeChat answered
}

type tokenAnswer struct {
	AccessToken string  `json:"access_token"`
	ExpiresIn   flexInt `json:"expires_in"`
}

func (a *tokenAnswer) token() (Token, error) {
	if a.AccessToken == "" {
		return Token{}, errMissing("access_token")
	}
	d, err := lifetime(a.ExpiresIn)
	return Token{AccessToken: a.AccessToken, ExpiresIn: d}, err
}

// Token fetches a classic access token (GET /cgi-bin/token). Every fetch
// invalidates the app's previous classic token after about 5 minutes, so only
// one process per AppID may call it. The AppSecret travels in the query;
// prefer StableToken, which sends it in the body. Errors: *APIError,
// *TransportError (OutcomeUnknown: a new token may have been minted).
func (c *Client) Token(ctx context.Context, appID, secret string) (Token, error) {
	var a tokenAnswer
	var t Token
	err := c.do(ctx, request{
		api: APIToken, method: http.MethodGet, path: "/cgi-bin/token",
		query:   url.Values{"grant_type": {"client_credential"}, "appid": {appID}, "secret": {secret}},
		secrets: []string{secret},
		check:   func() (err error) { t, err = a.token(); return err },
	}, &a)
	return t, err
}

// StableToken fetches a stable access token (POST /cgi-bin/stable_token, the
// AppSecret in the JSON body). Without force, repeated calls return the same
// token with its remaining lifetime until its last 5 minutes, when WeChat
// mints the successor; it is safe to call from several replicas. force mints
// a new token and kills the old one (20 a day, 30 s apart, else ignored).
// Errors: *APIError, *TransportError.
func (c *Client) StableToken(ctx context.Context, appID, secret string, force bool) (Token, error) {
	var a tokenAnswer
	var t Token
	err := c.do(ctx, request{
		api: APIStableToken, method: http.MethodPost, path: "/cgi-bin/stable_token",
		body: struct {
			GrantType    string `json:"grant_type"`
			AppID        string `json:"appid"`
			Secret       string `json:"secret"`
			ForceRefresh bool   `json:"force_refresh"`
		}{"client_credential", appID, secret, force},
		secrets: []string{secret},
		once:    force,
		check:   func() (err error) { t, err = a.token(); return err },
	}, &a)
	return t, err
}

// Ticket is a JS-SDK ticket (jsapi or wx_card).
type Ticket struct {
	Ticket    string
	ExpiresIn time.Duration
}

// Ticket fetches a JS-SDK ticket (GET /cgi-bin/ticket/getticket) of type typ,
// "jsapi" or "wx_card", with an access token of the app. 40001/42001 mean the
// access token is stale. Errors: *APIError, *TransportError.
func (c *Client) Ticket(ctx context.Context, accessToken, typ string) (Ticket, error) {
	var a struct {
		Ticket    string  `json:"ticket"`
		ExpiresIn flexInt `json:"expires_in"`
	}
	var t Ticket
	err := c.do(ctx, request{
		api: APIGetTicket, method: http.MethodGet, path: "/cgi-bin/ticket/getticket",
		query:   url.Values{"access_token": {accessToken}, "type": {typ}},
		secrets: []string{accessToken},
		check: func() error {
			if a.Ticket == "" {
				return errMissing("ticket")
			}
			d, err := lifetime(a.ExpiresIn)
			t = Ticket{Ticket: a.Ticket, ExpiresIn: d}
			return err
		},
	}, &a)
	return t, err
}

// ComponentToken is an Open Platform third-party platform's
// component_access_token.
type ComponentToken struct {
	AccessToken string
	ExpiresIn   time.Duration
}

// ComponentToken fetches a component_access_token (POST
// /cgi-bin/component/api_component_token) with the platform's AppSecret and
// the latest component_verify_ticket pushed by WeChat. 61005/61006 mean the
// ticket expired or is invalid. Errors: *APIError, *TransportError.
//
// No wxbroker code calls it yet: it stays for brokering Open Platform
// tokens, which a filed issue plans (as does AuthorizerToken).
func (c *Client) ComponentToken(ctx context.Context, componentAppID, componentSecret, verifyTicket string) (ComponentToken, error) {
	var a struct {
		AccessToken string  `json:"component_access_token"`
		ExpiresIn   flexInt `json:"expires_in"`
	}
	var t ComponentToken
	err := c.do(ctx, request{
		api: APIComponentToken, method: http.MethodPost, path: "/cgi-bin/component/api_component_token",
		body: struct {
			AppID  string `json:"component_appid"`
			Secret string `json:"component_appsecret"`
			Ticket string `json:"component_verify_ticket"`
		}{componentAppID, componentSecret, verifyTicket},
		secrets: []string{componentSecret, verifyTicket},
		check: func() error {
			if a.AccessToken == "" {
				return errMissing("component_access_token")
			}
			d, err := lifetime(a.ExpiresIn)
			t = ComponentToken{AccessToken: a.AccessToken, ExpiresIn: d}
			return err
		},
	}, &a)
	return t, err
}

// AuthorizerToken is an authorized account's access token obtained by a
// third-party platform, with the refresh token to use next time.
type AuthorizerToken struct {
	AccessToken  string
	ExpiresIn    time.Duration
	RefreshToken string // WeChat's answer; equal to the one sent when unchanged
}

// AuthorizerToken refreshes an authorizer_access_token (POST
// /cgi-bin/component/api_authorizer_token). 61023 means the
// authorizer_refresh_token is invalid. When WeChat's answer omits
// authorizer_refresh_token, RefreshToken is the one sent. WeChat may answer
// a new refresh token and retire the one sent, so the call is never
// repeated on a fallback URL once WeChat may have processed it: an
// OutcomeUnknown error means the refresh token may have changed, and
// AuthorizerList recovers the current one. Errors: *APIError,
// *TransportError.
//
// No wxbroker code calls it yet: it stays for brokering Open Platform
// tokens, which a filed issue plans (as does ComponentToken).
func (c *Client) AuthorizerToken(ctx context.Context, componentAccessToken, componentAppID, authorizerAppID, authorizerRefreshToken string) (AuthorizerToken, error) {
	var a struct {
		AccessToken  string  `json:"authorizer_access_token"`
		ExpiresIn    flexInt `json:"expires_in"`
		RefreshToken string  `json:"authorizer_refresh_token"`
	}
	var t AuthorizerToken
	err := c.do(ctx, request{
		api: APIAuthorizerToken, method: http.MethodPost, path: "/cgi-bin/component/api_authorizer_token",
		query: url.Values{"component_access_token": {componentAccessToken}},
		body: struct {
			ComponentAppID  string `json:"component_appid"`
			AuthorizerAppID string `json:"authorizer_appid"`
			RefreshToken    string `json:"authorizer_refresh_token"`
		}{componentAppID, authorizerAppID, authorizerRefreshToken},
		secrets: []string{componentAccessToken, authorizerRefreshToken},
		once:    true,
		check: func() error {
			if a.AccessToken == "" {
				return errMissing("authorizer_access_token")
			}
			d, err := lifetime(a.ExpiresIn)
			t = AuthorizerToken{AccessToken: a.AccessToken, ExpiresIn: d, RefreshToken: a.RefreshToken}
			if t.RefreshToken == "" {
				t.RefreshToken = authorizerRefreshToken
			}
			return err
		},
	}, &a)
	return t, err
}

// Call calls any token-checked API: method and path (e.g. POST
// "/cgi-bin/message/custom/send"; path may carry its own query), with the
// access token added as ?access_token=. body is nil or a value sent as JSON
// (a json.RawMessage is sent as is); out is nil or decoded from a success
// answer. An errcode other than 0 gives an *APIError (InvalidCredential: the
// token is stale). Non-GET calls are not repeated on a fallback URL once
// WeChat may have processed them. Errors: *APIError, *TransportError.
func (c *Client) Call(ctx context.Context, method, path, accessToken string, body, out any) error {
	if out != nil && reflect.ValueOf(out).Kind() != reflect.Pointer {
		return fmt.Errorf("wechat: %s: out must be a pointer, not %T", APIGeneric, out)
	}
	if method == "" {
		method = http.MethodGet
	}
	method = strings.ToUpper(method)
	readOnly := method == http.MethodGet || method == http.MethodHead
	return c.do(ctx, request{
		api: APIGeneric, method: method, path: path,
		query:    url.Values{"access_token": {accessToken}},
		body:     body,
		secrets:  []string{accessToken},
		once:     !readOnly,
		readOnly: readOnly,
	}, out)
}
