package wechat

import (
	"context"
	"net/http"
	"net/url"
)

// APIDomainIP lists the IP addresses behind api.weixin.qq.com (GET
// /cgi-bin/get_api_domain_ip, getApiDomainIp). It only needs a valid access
// token, changes nothing at WeChat and is callable by mini programs, official
// accounts and website apps alike, which makes it the cheap way to ask
// whether WeChat still accepts a token: nil means it does, an *APIError with
// InvalidCredential means it does not. Errors: *APIError, *TransportError.
func (c *Client) APIDomainIP(ctx context.Context, accessToken string) ([]string, error) {
	var a struct {
		IPList []string `json:"ip_list"`
	}
	err := c.do(ctx, request{
		api: APIDomainIP, method: http.MethodGet, path: "/cgi-bin/get_api_domain_ip",
		query:    url.Values{"access_token": {accessToken}},
		secrets:  []string{accessToken},
		readOnly: true,
	}, &a)
	if err != nil {
		return nil, err
	}
	return a.IPList, nil
}
