package wechat

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Session is the answer of code2Session. SessionKey must stay on the server.
type Session struct {
	OpenID, SessionKey, UnionID string // UnionID is empty unless the app is bound to an Open Platform account
}

// Code2Session exchanges a mini-program login code from wx.login (GET
// /sns/jscode2session). Codes are single use and live 5 minutes: 40029
// (invalid or expired), 40163 (already used) and 40226 (high-risk user) mean
// the user must log in again. No fallback URL is tried once the code may
// have been consumed. Errors: *APIError, *TransportError.
func (c *Client) Code2Session(ctx context.Context, appID, secret, code string) (Session, error) {
	var a struct {
		OpenID     string `json:"openid"`
		SessionKey string `json:"session_key"`
		UnionID    string `json:"unionid"`
	}
	err := c.do(ctx, request{
		api: APIJSCode2Session, method: http.MethodGet, path: "/sns/jscode2session",
		query: url.Values{
			"appid": {appID}, "secret": {secret}, "js_code": {code}, "grant_type": {"authorization_code"},
		},
		secrets: []string{secret, code},
		once:    true,
		check: func() error {
			if a.OpenID == "" {
				return errMissing("openid")
			}
			if a.SessionKey == "" {
				return errMissing("session_key")
			}
			return nil
		},
	}, &a)
	if err != nil {
		return Session{}, err
	}
	return Session{OpenID: a.OpenID, SessionKey: a.SessionKey, UnionID: a.UnionID}, nil
}

// Watermark proves which app and when encrypted user data was produced for.
type Watermark struct {
	Timestamp int64
	AppID     string
}

// PhoneInfo is a user's phone number.
type PhoneInfo struct {
	PhoneNumber     string // with the country code for foreign numbers
	PurePhoneNumber string
	CountryCode     string // "86"; WeChat sends a number or a string
	Watermark       Watermark
}

// UserPhoneNumber exchanges a phone code from the getPhoneNumber button (POST
// /wxa/business/getuserphonenumber). Codes are single use and live 5
// minutes (40029); 40013 means the access token belongs to another app. No
// fallback URL is tried once the code may have been consumed. Errors:
// *APIError, *TransportError.
func (c *Client) UserPhoneNumber(ctx context.Context, accessToken, code string) (PhoneInfo, error) {
	var a struct {
		PhoneInfo *struct {
			PhoneNumber     string     `json:"phoneNumber"`
			PurePhoneNumber string     `json:"purePhoneNumber"`
			CountryCode     flexString `json:"countryCode"`
			Watermark       struct {
				Timestamp flexInt `json:"timestamp"`
				AppID     string  `json:"appid"`
			} `json:"watermark"`
		} `json:"phone_info"`
	}
	err := c.do(ctx, request{
		api: APIPhoneNumber, method: http.MethodPost, path: "/wxa/business/getuserphonenumber",
		query: url.Values{"access_token": {accessToken}},
		body: struct {
			Code string `json:"code"`
		}{code},
		secrets: []string{accessToken, code},
		once:    true,
		check: func() error {
			if a.PhoneInfo == nil || a.PhoneInfo.PhoneNumber == "" && a.PhoneInfo.PurePhoneNumber == "" {
				return errMissing("phone_info")
			}
			return nil
		},
	}, &a)
	if err != nil {
		return PhoneInfo{}, err
	}
	p := a.PhoneInfo
	return PhoneInfo{
		PhoneNumber: p.PhoneNumber, PurePhoneNumber: p.PurePhoneNumber, CountryCode: string(p.CountryCode),
		Watermark: Watermark{Timestamp: int64(p.Watermark.Timestamp), AppID: p.Watermark.AppID},
	}, nil
}

// OAuthToken is a user's web OAuth grant (website QR login or Official
// Account web authorization). It is not the app's access token.
type OAuthToken struct {
	AccessToken  string
	ExpiresIn    time.Duration
	RefreshToken string // valid 30 days, not renewable
	OpenID       string
	Scope        string // comma-separated, e.g. "snsapi_login"
	UnionID      string
}

type oauthAnswer struct {
	AccessToken  string  `json:"access_token"`
	ExpiresIn    flexInt `json:"expires_in"`
	RefreshToken string  `json:"refresh_token"`
	OpenID       string  `json:"openid"`
	Scope        string  `json:"scope"`
	UnionID      string  `json:"unionid"`
}

func (a *oauthAnswer) token() (OAuthToken, error) {
	if a.AccessToken == "" {
		return OAuthToken{}, errMissing("access_token")
	}
	if a.OpenID == "" {
		return OAuthToken{}, errMissing("openid")
	}
	d, err := lifetime(a.ExpiresIn)
	return OAuthToken{
		AccessToken: a.AccessToken, ExpiresIn: d, RefreshToken: a.RefreshToken,
		OpenID: a.OpenID, Scope: a.Scope, UnionID: a.UnionID,
	}, err
}

// OAuthAccessToken exchanges an OAuth code from the redirect (GET
// /sns/oauth2/access_token). Codes are single use (website login: 10
// minutes; 40029, 40163, 42003). No fallback URL is tried once the code may
// have been consumed. Errors: *APIError, *TransportError.
func (c *Client) OAuthAccessToken(ctx context.Context, appID, secret, code string) (OAuthToken, error) {
	var a oauthAnswer
	var t OAuthToken
	err := c.do(ctx, request{
		api: APIOAuthAccessToken, method: http.MethodGet, path: "/sns/oauth2/access_token",
		query: url.Values{
			"appid": {appID}, "secret": {secret}, "code": {code}, "grant_type": {"authorization_code"},
		},
		secrets: []string{secret, code},
		once:    true,
		check:   func() (err error) { t, err = a.token(); return err },
	}, &a)
	return t, err
}

// UserInfo is a user's public profile from /sns/userinfo.
type UserInfo struct {
	OpenID     string
	Nickname   string
	Sex        int // 1 male, 2 female, 0 unknown
	Province   string
	City       string
	Country    string
	HeadImgURL string // empty when the user has no avatar
	Privilege  []string
	UnionID    string
}

// UserInfo reads a user's profile with the user's OAuth access token (GET
// /sns/userinfo, lang=zh_CN). 48001 means the grant lacks snsapi_userinfo or
// snsapi_login. Errors: *APIError, *TransportError.
func (c *Client) UserInfo(ctx context.Context, accessToken, openID string) (UserInfo, error) {
	var a struct {
		OpenID     string   `json:"openid"`
		Nickname   string   `json:"nickname"`
		Sex        flexInt  `json:"sex"`
		Province   string   `json:"province"`
		City       string   `json:"city"`
		Country    string   `json:"country"`
		HeadImgURL string   `json:"headimgurl"`
		Privilege  []string `json:"privilege"`
		UnionID    string   `json:"unionid"`
	}
	err := c.do(ctx, request{
		api: APIUserInfo, method: http.MethodGet, path: "/sns/userinfo",
		query:    url.Values{"access_token": {accessToken}, "openid": {openID}, "lang": {"zh_CN"}},
		secrets:  []string{accessToken},
		readOnly: true,
		check: func() error {
			if a.OpenID == "" {
				return errMissing("openid")
			}
			return nil
		},
	}, &a)
	if err != nil {
		return UserInfo{}, err
	}
	return UserInfo{
		OpenID: a.OpenID, Nickname: a.Nickname, Sex: int(a.Sex), Province: a.Province, City: a.City,
		Country: a.Country, HeadImgURL: a.HeadImgURL, Privilege: a.Privilege, UnionID: a.UnionID,
	}, nil
}

// QRConnectURL builds the website-login page URL the browser is sent to:
// qrconnectURL (normally "https://open.weixin.qq.com/connect/qrconnect")
// with appid, the escaped redirect_uri, response_type=code,
// scope=snsapi_login and state, then "#wechat_redirect". Parameters keep
// WeChat's documented order; any query already on qrconnectURL is kept
// in front.
func QRConnectURL(qrconnectURL, appID, redirectURI, state string) string {
	base, _, _ := strings.Cut(qrconnectURL, "#")
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
		if strings.HasSuffix(base, "?") || strings.HasSuffix(base, "&") {
			sep = ""
		}
	}
	var b strings.Builder
	b.WriteString(base)
	b.WriteString(sep)
	b.WriteString("appid=")
	b.WriteString(url.QueryEscape(appID))
	b.WriteString("&redirect_uri=")
	b.WriteString(url.QueryEscape(redirectURI))
	b.WriteString("&response_type=code&scope=snsapi_login&state=")
	b.WriteString(url.QueryEscape(state))
	b.WriteString("#wechat_redirect")
	return b.String()
}
